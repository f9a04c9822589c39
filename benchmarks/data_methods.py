"""Speed of the data and surrogate methods; prints one JSON object.

    python benchmarks/data_methods.py            # full sizes on CUDA, reduced on CPU
    python benchmarks/data_methods.py --full     # full sizes on CPU too (minutes)

* MMD-critic: 60,000 x 64 embeddings (CPU reduced: 20,000), 20 prototypes, 20 criticisms,
  global, then per class (10 classes).
* TracIn: last layer over 5 checkpoints of a small CNN, 32 test x 60,000 train images
  (CPU reduced: 10,000 train), and all parameters on 8 test x 2,000 train.
* Last-layer influence functions: same model, 60,000 (10,000) train.
* IDS: 60,000 examples x 64 binary features, >= 1,000 candidate rules.
Synthetic data: the timings, not the answers, are the point.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.methods.data.influence import last_layer_influence, tracin  # noqa: E402
from generator.methods.data.mmd_critic import mmd_critic, mmd_critic_per_class  # noqa: E402
from generator.methods.surrogates import fit_ids, fit_rule_list, fit_tree_surrogate, mine_candidate_rules  # noqa: E402


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.embed = nn.Linear(32 * 7 * 7, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.embed(self.features(x).flatten(1))))


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev):
    _sync(dev)
    t = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    full = args.full or dev.type == "cuda"
    g = torch.Generator().manual_seed(0)
    res = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(), "full": full}

    n = 60000 if full else 20000
    emb = torch.randn(n, 64, generator=g).to(dev)
    lab = torch.randint(0, 10, (n,), generator=g)
    _, t = timed(lambda: mmd_critic(emb, 20, 20, device=dev), dev)
    res["mmd_critic_global"] = {"n": n, "d": 64, "prototypes": 20, "criticisms": 20, "seconds": round(t, 3)}
    _, t = timed(lambda: mmd_critic_per_class(emb, lab, 10, 10, device=dev), dev)
    res["mmd_critic_per_class_and_global"] = {"n": n, "classes": 10, "seconds": round(t, 3)}

    ntr = 60000 if full else 10000
    trx = torch.randn(ntr, 1, 28, 28, generator=g)
    tr_y = torch.randint(0, 10, (ntr,), generator=g)
    tex, tey = trx[:32] + 0.1, tr_y[:32]
    cks = []
    for k in range(5):
        torch.manual_seed(k)
        cks.append((CNN().state_dict(), 0.01))
    out, t = timed(lambda: tracin(CNN, cks, trx, tr_y, tex, tey, device=dev, batch_size=2048), dev)
    res["tracin_last_layer"] = {"checkpoints": 5, "test": 32, "train": ntr, "seconds": round(t, 3)}
    out, t = timed(lambda: tracin(CNN, cks, trx[:2000], tr_y[:2000], tex[:8], tey[:8], params="all", device=dev,
                                  batch_size=256), dev)
    res["tracin_all_params"] = {"checkpoints": 5, "test": 8, "train": 2000,
                                "params": sum(p.numel() for p in CNN().parameters()), "seconds": round(t, 3)}
    model = CNN()
    model.load_state_dict(cks[0][0])
    out, t = timed(lambda: last_layer_influence(model, trx, tr_y, tex, tey, device=dev, batch_size=4096), dev)
    res["influence_last_layer"] = {"test": 32, "train": ntr, "hessian_params": out.extra["n_params"],
                                   "seconds": round(t, 3)}

    rng = np.random.default_rng(0)
    N, F = 60000, 64
    B = rng.random((N, F)) < rng.uniform(0.1, 0.5, F)
    y = np.full(N, 9)
    for k in range(9):  # planted rules "f(2k) and f(2k+1) -> k", first match wins, 10% noise
        y[(y == 9) & B[:, 2 * k] & B[:, 2 * k + 1]] = k
    y = np.where(rng.random(N) < 0.1, rng.integers(0, 10, N), y)
    cands, t_mine = timed(lambda: mine_candidate_rules(B, y, 10, min_support=0.01, max_len=2, min_precision=0.05,
                                                       max_candidates=3000), torch.device("cpu"))
    ds, t_ids = timed(lambda: fit_ids(cands, y), torch.device("cpu"))
    rl, t_rl = timed(lambda: fit_rule_list(cands, y), torch.device("cpu"))
    tree, t_tree = timed(lambda: fit_tree_surrogate(B, y, 5), torch.device("cpu"))
    res["ids"] = {"examples": N, "features": F, "candidate_rules": len(cands), "itemsets": len(cands.itemsets),
                  "mine_seconds": round(t_mine, 3), "select_seconds": round(t_ids, 3), "moves": len(ds.history),
                  "rules": len(ds.rules), "fidelity": float((ds.predict(B) == y).mean()),
                  "rule_list_seconds": round(t_rl, 3), "tree_seconds": round(t_tree, 3)}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
