"""Ctrl-C and SIGTERM during training: checkpoint the frame in progress, then stop."""
import signal
import threading


class Interrupts:
  """Ctrl-C (SIGINT) or SIGTERM (cluster schedulers, Ray, `kill`) while training only sets a flag;
  the loop finishes the frame in progress, saves a checkpoint of it and then raises
  KeyboardInterrupt (`check`), so nothing trained is lost and a resume continues from that very
  frame. Python would raise it wherever the main thread happens to be: inside a
  garbage-collection callback it is ignored (seen here: a run trained on to its end), and in a
  checkpoint write it would cut the write. A signal ignored when the run started (Ctrl-C in a
  background job of a script, `nohup`) stays ignored, as Python itself does."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.received, self.previous = [], {}
    if threading.current_thread() is not threading.main_thread():
      return
    for sig in self.SIGNALS:
      if signal.getsignal(sig) is not signal.SIG_IGN:
        self.previous[sig] = signal.signal(sig, lambda signum, frame: self.received.append(signum))

  def check(self):
    if self.received:
      raise KeyboardInterrupt

  def restore(self):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)
    self.previous = {}
