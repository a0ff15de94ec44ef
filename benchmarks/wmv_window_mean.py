"""ES-WMV's two outputs replayed on recorded fits: the output at the detected point against the mean of the
window there (Wang et al. name both).

    python benchmarks/wmv_window_mean.py results/stopping-tasks/trajectories

The trajectories hold every 10th output, so the window is 10 samples (100 iterations) and the patience 100
samples; the detection is that of the replay, not of the live rule.
"""
import sys
from pathlib import Path

import numpy as np
import torch

from archlab import metrics, stopping

rows = []
for f in sorted(str(p) for p in Path(sys.argv[1]).glob('*.npz')):
    d = np.load(f); it = [int(i) for i in d['iteration']]; out = torch.from_numpy(d['output'].astype(np.float32))
    ref = torch.from_numpy(d['reference'].astype(np.float32))
    if out.shape[-2:] != ref.shape[-2:]:
        continue
    w = 10
    rule = stopping.WMVRule(window=w, patience=100)
    for i, o in zip(it, out):
        rule.update(i, o[None])
    det = int(rule.detected_iteration[0])
    if det < 0:
        continue
    k = it.index(det)
    single = float(metrics.psnr(out[k][None], ref))
    mean = float(metrics.psnr(out[max(0, k - w + 1):k + 1].mean(0, keepdim=True), ref))
    rows.append((f.split('/')[-1][:-4], single, mean))
a = np.array([(r[1], r[2]) for r in rows])
print(len(rows), 'runs; output at the detected point %.2f dB, window mean %.2f dB; mean difference %+.2f, range %+.2f..%+.2f'
      % (a[:, 0].mean(), a[:, 1].mean(), (a[:, 1] - a[:, 0]).mean(), (a[:, 1] - a[:, 0]).min(), (a[:, 1] - a[:, 0]).max()))
for task in ('denoise', 'poisson', 'jpeg', 'inpaint', 'sr'):
    sel = [i for i, r in enumerate(rows) if r[0].startswith(task)]
    print(task, len(sel), '%+.2f' % (a[sel, 1] - a[sel, 0]).mean())
