"""Writes the PyTorch reference trajectories that tests/test_transforms.py and test_schedules.py read.

Run by hand (needs torch; CI does not):
    python tests/golden/make_golden.py
It writes tests/golden/adam.npz (parameter trajectories of torch.optim.AdamW / Adam on a small tanh
network), tests/golden/sgdw.npz (the same for SGDW: torch.optim.SGD(weight_decay=0) after fastai's
decoupled decay p.mul_(1 - lr * wd), applied by hand before each step) and tests/golden/schedules.npz
(get_last_lr() and momentum of torch's schedulers at every step). Each array's key names the case; the matching configuration is in CASES / SCHEDULES below and
is read back by the tests from the `config_<case>` string entries.
"""

import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
NUM_STEPS = 300

# name -> (dtype, optimizer kwargs, scheduler or None, mask second layer from decay)
CASES = {
    "adamw_wd0": dict(dtype="float64", lr=1e-2, weight_decay=0.0, amsgrad=False),
    "adamw_wd": dict(dtype="float64", lr=1e-2, weight_decay=0.1, amsgrad=False),
    "adamw_amsgrad_wd": dict(dtype="float64", lr=1e-2, weight_decay=0.1, amsgrad=True),
    "adamw_exponential_lr": dict(dtype="float64", lr=2e-2, weight_decay=0.1, amsgrad=False,
                                 scheduler=dict(name="ExponentialLR", gamma=0.99)),
    "adamw_amsgrad_one_cycle": dict(dtype="float64", lr=5e-2, weight_decay=0.05, amsgrad=True,
                                    scheduler=dict(name="OneCycleLR", max_lr=5e-2,
                                                   total_steps=NUM_STEPS, pct_start=0.3)),
    "adam_amsgrad": dict(dtype="float64", lr=1e-2, weight_decay=0.0, amsgrad=True, adam=True),
    "adamw_masked": dict(dtype="float64", lr=1e-2, weight_decay=0.3, amsgrad=False,
                         decay_only_first=True),
    "adamw_amsgrad_float32": dict(dtype="float32", lr=1e-2, weight_decay=0.1, amsgrad=True),
    "adamw_warm_restarts": dict(dtype="float64", lr=2e-2, weight_decay=0.2, amsgrad=False,
                                scheduler=dict(name="CosineAnnealingWarmRestarts", T_0=20, T_mult=2,
                                               eta_min=1e-4)),
}

# SGDW cases: torch.optim.SGD(momentum, nesterov, weight_decay=0) with the decay applied by hand.
SGDW_CASES = {
    "sgdw": dict(lr=0.1, momentum=0.9, weight_decay=0.1),
    "sgdw_nesterov": dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True),
    "sgdw_warm_restarts": dict(lr=0.2, momentum=0.9, weight_decay=0.3,
                               scheduler=dict(name="CosineAnnealingWarmRestarts", T_0=20, T_mult=2,
                                              eta_min=1e-3)),
    "sgdw_masked_nesterov": dict(lr=0.05, momentum=0.8, weight_decay=0.5, nesterov=True,
                                 decay_only_first=True),
    # OneCycleLR also cycles SGD's momentum (cycle_momentum=True by default).
    "sgdw_one_cycle": dict(lr=0.2, momentum=0.9, weight_decay=0.1,
                           scheduler=dict(name="OneCycleLR", max_lr=0.2, total_steps=NUM_STEPS,
                                          pct_start=0.3)),
}

SCHEDULES = {
    "cyclic_triangular": dict(name="CyclicLR", steps=100,
                              kwargs=dict(base_lr=1e-3, max_lr=1e-1, step_size_up=7)),
    "cyclic_triangular2": dict(name="CyclicLR", steps=140,
                               kwargs=dict(base_lr=1e-3, max_lr=1e-1, step_size_up=5,
                                           step_size_down=9, mode="triangular2")),
    "cyclic_exp_range": dict(name="CyclicLR", steps=120,
                             kwargs=dict(base_lr=1e-3, max_lr=1e-1, step_size_up=6,
                                         mode="exp_range", gamma=0.97)),
    "cyclic_fractional": dict(name="CyclicLR", steps=100,
                              kwargs=dict(base_lr=2e-3, max_lr=5e-2, step_size_up=4.5,
                                          step_size_down=3.25)),
    # CyclicLR's default cycle_momentum=True: SGD's momentum from 0.9 down to 0.8 as the LR rises.
    "cyclic_triangular2_momentum": dict(name="CyclicLR", steps=100, cycle_momentum=True,
                                        kwargs=dict(base_lr=1e-3, max_lr=1e-1, step_size_up=5,
                                                    mode="triangular2", base_momentum=0.8,
                                                    max_momentum=0.9)),
    "cyclic_custom_scale_cycle": dict(name="CyclicLR", steps=100, scale_fn="inverse",
                                      kwargs=dict(base_lr=1e-3, max_lr=1e-1, step_size_up=5,
                                                  scale_mode="cycle")),
    "cyclic_custom_scale_iterations": dict(name="CyclicLR", steps=100, scale_fn="decay",
                                           kwargs=dict(base_lr=1e-3, max_lr=1e-1, step_size_up=5,
                                                       scale_mode="iterations")),
    "one_cycle_cos": dict(name="OneCycleLR", steps=200,
                          kwargs=dict(max_lr=0.1, total_steps=200, pct_start=0.3)),
    "one_cycle_linear": dict(name="OneCycleLR", steps=150,
                             kwargs=dict(max_lr=0.5, total_steps=150, pct_start=0.25,
                                         anneal_strategy="linear", div_factor=10.0,
                                         final_div_factor=100.0, base_momentum=0.8,
                                         max_momentum=0.9)),
    "one_cycle_three_phase_cos": dict(name="OneCycleLR", steps=200,
                                      kwargs=dict(max_lr=0.1, total_steps=200, pct_start=0.3,
                                                  three_phase=True)),
    "one_cycle_three_phase_linear": dict(name="OneCycleLR", steps=97, adam=True,
                                         kwargs=dict(max_lr=0.2, total_steps=97, pct_start=0.37,
                                                     three_phase=True,
                                                     anneal_strategy="linear")),
    # Settings where a phase is reached by no step, or starts before step 0 (PyTorch skips or
    # extrapolates it): one and three steps in all, no rise, a three-phase peak past the middle.
    "one_cycle_one_step": dict(name="OneCycleLR", steps=1, kwargs=dict(max_lr=0.1, total_steps=1)),
    "one_cycle_three_steps": dict(name="OneCycleLR", steps=3, kwargs=dict(max_lr=0.1, total_steps=3)),
    "one_cycle_short_rise": dict(name="OneCycleLR", steps=4,
                                 kwargs=dict(max_lr=0.1, total_steps=4, pct_start=0.2)),
    "one_cycle_no_rise": dict(name="OneCycleLR", steps=50,
                              kwargs=dict(max_lr=0.1, total_steps=50, pct_start=0.0)),
    "one_cycle_three_phase_late_peak": dict(name="OneCycleLR", steps=100,
                                            kwargs=dict(max_lr=0.1, total_steps=100, pct_start=0.6,
                                                        three_phase=True)),
    "sgdr_t_mult_1": dict(name="CosineAnnealingWarmRestarts", steps=100,
                          kwargs=dict(T_0=10, T_mult=1, eta_min=0.0)),
    "sgdr_t_mult_2": dict(name="CosineAnnealingWarmRestarts", steps=400,
                          kwargs=dict(T_0=5, T_mult=2, eta_min=1e-4)),
    "sgdr_t_mult_3": dict(name="CosineAnnealingWarmRestarts", steps=400,
                          kwargs=dict(T_0=3, T_mult=3, eta_min=1e-3)),
}


# Custom CyclicLR scale functions, named in the specs (the tests use jnp versions of the same).
SCALE_FNS = {"inverse": lambda x: 1.0 / (1.0 + x), "decay": lambda x: 0.98**x}


def problem():
  """The fixed regression problem: inputs, targets and initial weights (float64)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 3))
  y = np.sin(x @ np.array([1.0, -2.0, 0.5]))[:, None]
  w1 = rng.normal(size=(3, 4)) * 0.5
  w2 = rng.normal(size=(4, 1)) * 0.5
  return x, y, w1, w2


def loss_fn(x, y, w1, w2):
  return torch.mean((torch.tanh(x @ w1) @ w2 - y) ** 2)


def run_optimizer(config):
  dtype = getattr(torch, config["dtype"])
  x, y, w1, w2 = (torch.tensor(a, dtype=dtype) for a in problem())
  w1.requires_grad_(True)
  w2.requires_grad_(True)
  kwargs = dict(lr=config["lr"], betas=(0.9, 0.999), eps=1e-8, amsgrad=config["amsgrad"],
                foreach=False)
  if config.get("decay_only_first"):
    groups = [{"params": [w1], "weight_decay": config["weight_decay"]},
              {"params": [w2], "weight_decay": 0.0}]
  else:
    groups = [{"params": [w1, w2], "weight_decay": config["weight_decay"]}]
  opt_class = torch.optim.Adam if config.get("adam") else torch.optim.AdamW
  optimizer = opt_class(groups, **kwargs)
  scheduler = make_scheduler(optimizer, config)
  trajectory = []
  for _ in range(NUM_STEPS):
    optimizer.zero_grad()
    loss_fn(x, y, w1, w2).backward()
    optimizer.step()
    if scheduler is not None:
      scheduler.step()
    trajectory.append(np.concatenate([w1.detach().numpy().ravel(), w2.detach().numpy().ravel()]))
  return np.asarray(trajectory)


def make_scheduler(optimizer, config):
  """The torch scheduler a golden case names, or None."""
  if "scheduler" not in config:
    return None
  spec = dict(config["scheduler"])
  return getattr(torch.optim.lr_scheduler, spec.pop("name"))(optimizer, **spec)


def run_sgdw(config):
  """fastai's "true weight decay" on torch.optim.SGD: p <- p * (1 - lr * wd), then the SGD step."""
  x, y, w1, w2 = (torch.tensor(a, dtype=torch.float64) for a in problem())
  w1.requires_grad_(True)
  w2.requires_grad_(True)
  decayed = [w1] if config.get("decay_only_first") else [w1, w2]
  optimizer = torch.optim.SGD([w1, w2], lr=config["lr"], momentum=config["momentum"],
                              nesterov=config.get("nesterov", False), weight_decay=0.0,
                              foreach=False)
  scheduler = make_scheduler(optimizer, config)
  trajectory = []
  for _ in range(NUM_STEPS):
    optimizer.zero_grad()
    loss_fn(x, y, w1, w2).backward()
    lr = optimizer.param_groups[0]["lr"]
    with torch.no_grad():
      for p in decayed:
        p.mul_(1 - lr * config["weight_decay"])
    optimizer.step()
    if scheduler is not None:
      scheduler.step()
    trajectory.append(np.concatenate([w1.detach().numpy().ravel(), w2.detach().numpy().ravel()]))
  return np.asarray(trajectory)


def run_schedule(spec):
  param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
  if spec.get("adam"):
    optimizer = torch.optim.Adam([param], lr=1.0)
  else:
    optimizer = torch.optim.SGD([param], lr=1.0, momentum=0.9)
  kwargs = dict(spec["kwargs"])
  if spec["name"] == "CyclicLR":
    kwargs["cycle_momentum"] = spec.get("cycle_momentum", False)
    if "scale_fn" in spec:
      kwargs["scale_fn"] = SCALE_FNS[spec["scale_fn"]]
  scheduler = getattr(torch.optim.lr_scheduler, spec["name"])(optimizer, **kwargs)

  def momentum():
    group = optimizer.param_groups[0]
    return group["betas"][0] if spec.get("adam") else group["momentum"]

  lrs, momenta = [scheduler.get_last_lr()[0]], [momentum()]
  for _ in range(spec["steps"]):
    optimizer.step()
    scheduler.step()
    lrs.append(scheduler.get_last_lr()[0])
    momenta.append(momentum())
  return np.asarray(lrs, dtype=np.float64), np.asarray(momenta, dtype=np.float64)


def main():
  x, y, w1, w2 = problem()
  arrays = {"x": x, "y": y, "w1": w1, "w2": w2}
  for name, config in CASES.items():
    arrays[name] = run_optimizer(config)
    arrays[f"config_{name}"] = np.asarray(json.dumps(config))
  np.savez_compressed(os.path.join(HERE, "adam.npz"), **arrays)

  arrays = {"x": x, "y": y, "w1": w1, "w2": w2}
  for name, config in SGDW_CASES.items():
    arrays[name] = run_sgdw(config)
    arrays[f"config_{name}"] = np.asarray(json.dumps(config))
  np.savez_compressed(os.path.join(HERE, "sgdw.npz"), **arrays)

  arrays = {}
  for name, spec in SCHEDULES.items():
    arrays[f"{name}_lr"], arrays[f"{name}_momentum"] = run_schedule(spec)
    arrays[f"config_{name}"] = np.asarray(json.dumps(spec))
  np.savez_compressed(os.path.join(HERE, "schedules.npz"), **arrays)
  print(f"torch {torch.__version__}: wrote adam.npz ({len(CASES)} cases), sgdw.npz "
        f"({len(SGDW_CASES)} cases) and schedules.npz ({len(SCHEDULES)} schedules), "
        f"{NUM_STEPS} optimizer steps each")


if __name__ == "__main__":
  main()
