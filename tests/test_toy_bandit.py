"""examples/toy_bandit.py: on a bandit with four equal peaks, the diffusion policy (SDAC's signal)
covers several peaks and the tanh-Gaussian (SAC's actor) only one; the PNG is written."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example():
  spec = importlib.util.spec_from_file_location('toy_bandit', os.path.join(ROOT, 'examples',
                                                                           'toy_bandit.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_diffusion_covers_several_peaks_and_the_gaussian_one(tmp_path):
  bandit = _example()
  out = tmp_path / 'bandit.png'
  cov = bandit.main(str(out), steps=1500)
  gauss, diff = cov['gaussian'], cov['diffusion']
  assert gauss['peaks_covered'] == 1 and max(gauss['share_per_peak']) > 0.8, gauss
  assert diff['peaks_covered'] >= 3 and max(diff['share_per_peak']) < 0.6, diff
  assert diff['near_any_peak'] > 0.7, diff               # its mass is on peaks, not spread out
  assert out.stat().st_size > 20000                      # a real figure, not an empty canvas
