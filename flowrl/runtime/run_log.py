"""A run folder's logs: CSV files (train.csv, eval.csv) and TensorBoard events, and the
learning-curve PNG drawn from eval.csv. A resumed run drops rows past its checkpoint."""
import csv
import os
from typing import Dict

import numpy as np
from tensorboardX import SummaryWriter


class RunLog:

  def __init__(self, run_dir: str, resume_frame: int = 0):
    self.run_dir = run_dir
    os.makedirs(run_dir, exist_ok=True)
    for name in ('train', 'eval'):
      self._truncate(self._path(name), resume_frame)
    self.tb = SummaryWriter(os.path.join(run_dir, 'tb'), purge_step=resume_frame or None)

  def _path(self, name):
    return os.path.join(self.run_dir, f'{name}.csv')

  @staticmethod
  def _truncate(path, frame):
    if not os.path.exists(path):
      return
    with open(path) as f:
      rows = list(csv.DictReader(f))
    keep = [r for r in rows if int(r['frame']) <= frame]
    if not keep:
      os.remove(path)
      return
    with open(path, 'w', newline='') as f:
      w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
      w.writeheader()
      w.writerows(keep)

  def write(self, name: str, frame: int, values: Dict[str, float]) -> None:
    """Append a row; if it brings new columns (metrics appear once updates start), the file is
    rewritten with the union of columns."""
    path = self._path(name)
    row = {'frame': frame, **{k: float(v) for k, v in values.items()}}
    rows = []
    if os.path.exists(path):
      with open(path) as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        if set(row) - set(header):
          rows = list(reader)
    else:
      header = []
    if rows or not header or set(row) - set(header):
      header = header + [k for k in row if k not in header]
      with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=header, restval='')
        w.writeheader()
        w.writerows(rows + [row])
    else:
      with open(path, 'a', newline='') as f:
        csv.DictWriter(f, fieldnames=header, restval='').writerow(row)
    for k, v in values.items():
      if np.isfinite(v):
        self.tb.add_scalar(f'{name}/{k}', float(v), frame)

  def close(self):
    self.tb.close()


def read_csv(path: str):
  with open(path) as f:
    return [{k: float(v) if v != '' else float('nan') for k, v in r.items()}
            for r in csv.DictReader(f)]


def plot_learning_curve(run_dir: str, title: str) -> str:
  """eval.csv -> learning_curve.png (mean ± std of evaluation returns against env frames)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = read_csv(os.path.join(run_dir, 'eval.csv'))
  frames = np.array([r['frame'] for r in rows])
  mean = np.array([r['return_mean'] for r in rows])
  std = np.array([r['return_std'] for r in rows])
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(frames, mean)
  ax.fill_between(frames, mean - std, mean + std, alpha=0.25)
  ax.set_xlabel('environment frames')
  ax.set_ylabel('evaluation return')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  out = os.path.join(run_dir, 'learning_curve.png')
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out
