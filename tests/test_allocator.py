"""`flowrl.runtime.allocator`: with freed memory kept, a large block freed and allocated again
costs no page faults; with glibc's default it is mapped and faulted in anew each time (each case
in a fresh process, since the setting is process-wide)."""
import json
import os
import subprocess
import sys

import pytest

PROBE = r'''
import json, resource, numpy as np
from flowrl.runtime.allocator import keep_freed_memory
kept = keep_freed_memory()
faults = []
for _ in range(4):
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  a = np.empty(16 * 2 ** 20, np.float32)   # 64 MB: above glibc's mmap threshold
  a.fill(1.0)
  del a
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({'kept': kept, 'faults': faults}))
'''


def _probe(flag: str) -> dict:
  out = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, check=True,
                       env=dict(os.environ, FLOWRL_KEEP_FREED_MEMORY=flag))
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc only')
def test_kept_memory_is_reused_without_page_faults_and_the_default_faults_each_time():
  default, kept = _probe('0'), _probe('1')
  assert default['kept'] is False and kept['kept'] is True
  assert min(default['faults'][1:]) > 30          # 64 MB mapped afresh each time
  assert max(kept['faults'][1:]) <= 2            # the first block, freed, serves the rest
