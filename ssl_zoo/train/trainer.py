"""The training loop: views -> method step -> optimizer -> target rule, with the LR schedule, checkpoints and
per-epoch metrics. It receives built parts; ssl_zoo.train.build makes them from a run's config.

Every random draw is derived from (seed, epoch) for the data order and (seed, step) for the views, so a run
resumed from any checkpoint replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from ssl_zoo.common import distributed, stopping
from ssl_zoo.common.errors import UserError
from ssl_zoo.common.stopping import STOP_SIGNALS, Preempted
from ssl_zoo.data.source import DataSource
from ssl_zoo.data.views import ViewMaker
from ssl_zoo.models.method import Method
from ssl_zoo.runs.checkpoint import RESUME_KEYS, find_checkpoint, save_checkpoint
from ssl_zoo.runs.config_file import has_config, write_config
from ssl_zoo.runs.metrics_file import write_metrics
from ssl_zoo.train import ddp
from ssl_zoo.train.epoch_monitor import EpochMonitor
from ssl_zoo.train.online_probe import OnlineProbe
from ssl_zoo.train.optim import set_lr
from ssl_zoo.train.prefetch import ViewPrefetcher
from ssl_zoo.train.resume_checks import check_world_size, load_resume_state
from ssl_zoo.train.settings import TrainSettings

PREEMPTED_EXIT_CODE = 3  # a run stopped by SIGTERM/SIGUSR2 after checkpointing; starting it again resumes
BAD_DATA_CODE = len(STOP_SIGNALS) + 1  # a rank passed data.max_bad_fraction: every rank stops with it (one vote)

Views = list[torch.Tensor]


class Diverged(Exception):
    """The loss became NaN or infinite."""


def step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


class Trainer:
    def __init__(self, *, method: Method, data: DataSource, views: ViewMaker, optimizer: torch.optim.Optimizer,
                 probe: OnlineProbe, monitor: EpochMonitor, settings: TrainSettings, device: torch.device,
                 run_dir: Path, cfg: DictConfig, compiled_views: Callable | None = None,
                 open_tracker: Callable | None = None):
        """`method` on `device`; `data` either kind of dataset (ssl_zoo.data.source); `views` the augmentations
        (`compiled_views` the same, compiled); `open_tracker` opens TensorBoard or wandb on first use (None: only
        metrics.csv). `cfg` is only recorded, never read here: written as config.yaml when fit() starts a
        directory without one, and read by what runs after training (the evaluation, results.json)."""
        self.method, self.data, self.views, self.optimizer = method, data, views, optimizer
        self.make_views = compiled_views or views
        self.probe, self.monitor, self.settings = probe, monitor, settings
        self.device, self.run_dir, self.cfg, self.open_tracker = device, run_dir, cfg, open_tracker
        # DDP: settings.batch_size images per process; the epoch order, the views, the LR and the checkpoints
        # follow the global batch of world x batch_size images (ssl_zoo.train.ddp), so a run matches one process
        # with that batch. Only rank 0 writes run files.
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.seed, self.batch_size = settings.seed, settings.batch_size
        self.global_batch = self.batch_size * self.world
        self.steps_per_epoch, self.total_steps = settings.schedule.steps_per_epoch, settings.schedule.total_steps
        self.num_epochs, self.channels_last = settings.schedule.num_epochs, settings.channels_last
        self.pretrain = data.pretrain_input(views, device, self.seed, self.batch_size, self.rank, self.world, run_dir)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if settings.bf16 else nullcontext()
        self.step_fn = ddp.wrap(method, device) if self.world > 1 else method.training_step
        self.prefetch_views = device.type == "cuda"  # next batch's views on a side stream (gpu_loader)
        self.stop_vote = ddp.StopVote() if self.world > 1 else None
        self.step, self.rows, self.elapsed = 0, [], 0.0
        self.sums: dict[str, torch.Tensor] = {}
        self.host_sums: dict[str, float] = {}  # python-number logs (lr, tau, ...): summed here, no device copy
        self.stop_requested = False  # set at a step boundary, by every rank at the same step
        self.tracker = None  # created on first use
        self.stop_code = 0  # set by the signal handler: 1 SIGTERM or Ctrl-C, 2 SIGUSR2
        self.keep_previous = True  # False after resuming from prev.pt: never rotate an unreadable last.pt into it

    # --- checkpoints -------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                **self.probe.state(), "rows": self.rows, "elapsed": self.elapsed,
                "sums": {k: v.detach().cpu() for k, v in self.sums.items()}, "host_sums": dict(self.host_sums),
                "world_size": self.world}

    def restore(self, rewrite_metrics: bool = True) -> bool:
        """Loads the newest checkpoint. rewrite_metrics=False only reads (run.train rewrites metrics.csv once it
        holds the run directory's lock)."""
        # last.pt, or prev.pt (one warning line) when last.pt is bad or lacks what resuming reads
        found = find_checkpoint(self.run_dir, RESUME_KEYS)
        if found is None:
            return False
        state, path = found
        self.keep_previous = path.name == "last.pt"
        check_world_size(state, self.run_dir, self.world)
        load_resume_state(self.method, self.optimizer, self.probe, state, path)
        self.step, self.rows, self.elapsed = int(state["step"]), list(state["rows"]), float(state["elapsed"])
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.host_sums = dict(state.get("host_sums", {}))
        if rewrite_metrics and self.rank == 0:  # rows written after this checkpoint (then a kill) are dropped
            write_metrics(self.run_dir, self.rows)
        return True

    def checkpoint(self) -> None:
        self._check_finite()
        if self.rank == 0:
            save_checkpoint(self.run_dir, self.state(), keep_previous=self.keep_previous)
        self.keep_previous = True
        distributed.barrier()  # no rank goes on (or exits) before the checkpoint is whole

    def _check_finite(self) -> None:
        """A checkpoint never holds NaN/inf weights (the loss is only checked every log_every steps): the last
        good checkpoint stays last.pt instead. One host sync per checkpoint."""
        floats = [t for t in self.method.state_dict().values() if t.is_floating_point()]
        if floats and not bool(torch.stack([t.isfinite().all() for t in floats]).all()):
            epoch = max(1, math.ceil(self.step / self.steps_per_epoch))
            raise Diverged(f"weights are not finite at step {self.step}, epoch {epoch}")

    # --- the loop ----------------------------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:  # Ctrl-C as SIGTERM; a second Ctrl-C aborts at once
        self.stop_code = stopping.received(signum, self.stop_code)

    def fit(self) -> None:
        handlers = stopping.install(self._request_stop)
        self.stop_code = max(self.stop_code, stopping.code())  # one received during set-up: stop at the first step
        try:
            self._fit()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    def _fit(self) -> None:
        if self.step == 0:  # a run that diverges or is killed in its first epoch still has a whole checkpoint
            if self.rank == 0 and not has_config(self.run_dir):  # a Trainer's fit() from Python:
                write_config(self.run_dir, self.cfg)  # a run directory `ssl-zoo eval` and run.train accept
            self.checkpoint()
        while self.step < self.total_steps:
            epoch = self.step // self.steps_per_epoch
            self._run_epoch(epoch)
            if self.stop_requested:
                if self.step == self.settings.schedule.epoch_end(epoch):  # stopped on the epoch's last step: its
                    self._end_epoch(epoch)  # row belongs in this checkpoint, the resumed run starts the next epoch
                self.checkpoint()
                raise Preempted(f"stopped at step {self.step}; checkpoint saved",
                                STOP_SIGNALS[max(self.stop_code, 1) - 1])
            self._end_epoch(epoch)
            if (epoch + 1) % self.settings.checkpoint_every == 0 or self.step == self.total_steps:
                self.checkpoint()
        code = self.stop_code if self.stop_vote is None else self.stop_vote(self.stop_code)
        if code:  # the signal came after the last step: the final checkpoint is whole, a restart evaluates
            raise Preempted(f"stopped at step {self.step} (the last); checkpoint saved", STOP_SIGNALS[code - 1])
        if self.rank == 0:
            self.monitor.save_spectra(self.run_dir, self.method)  # spectrum.npy at the end

    def _run_epoch(self, epoch: int) -> None:
        self.method.train()
        offset = epoch * self.steps_per_epoch
        first, end = self.step - offset, self.settings.schedule.epoch_end(epoch) - offset
        bar = tqdm(range(first, end), desc=f"epoch {epoch + 1}/{self.num_epochs}",
                   disable=not self.show_bar, leave=False, dynamic_ncols=True)
        start, done = time.perf_counter(), 0
        inputs = self._step_inputs(epoch, first, end)
        for i in bar:
            x, y, views = next(inputs)
            logs = self._train_step(x, y, views)
            done += self.global_batch
            if (i + 1) % self.settings.log_every == 0:
                self._read_loss(logs, epoch, bar, done / (time.perf_counter() - start))
            code = self._stop_vote()
            if code:
                self.stop_requested, self.stop_code = True, code
                break
        self.elapsed += time.perf_counter() - start
        self.sums["images"] = self.sums.get("images", torch.zeros((), device=self.device)) + done
        self.sums["seconds"] = self.sums.get("seconds", torch.zeros((), device=self.device)) + (
            time.perf_counter() - start)

    def _step_inputs(self, epoch: int, first: int, end: int) -> Iterator[tuple[torch.Tensor | None, torch.Tensor,
                                                                                Views | None]]:
        """(uint8 input, labels, None) of the epoch's steps first..end-1; on CUDA (None, labels, views) with each
        step's views made one step ahead on a side stream (ViewPrefetcher)."""
        batches = self.pretrain.batches(epoch, range(first, end))
        if not self.prefetch_views:
            yield from ((x, y, None) for x, y in batches)
            return
        labels: dict[int, torch.Tensor] = {}

        def views_of(i: int) -> Views:  # called in order i = first, first + 1, ...
            x, labels[i] = next(batches)
            return self._make_views(x, epoch * self.steps_per_epoch + i)

        ahead = ViewPrefetcher(views_of, self.device, end)
        for i in range(first, end):
            views = ahead.get(i)
            y = labels.pop(i)
            if y.is_cuda:  # made on the prefetch stream, read on this one (as ViewPrefetcher does for views)
                y.record_stream(torch.cuda.current_stream(self.device))
            yield None, y, views

    def _read_loss(self, logs: dict, epoch: int, bar: tqdm, images_per_s: float) -> None:
        """Every log_every steps: the loss (the same on every rank), checked, shown and sent to the tracker."""
        loss = distributed.all_reduce_mean_(logs["loss"].clone()).item()
        if not math.isfinite(loss):
            raise Diverged(f"loss is {loss} at step {self.step}, epoch {epoch + 1}")
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_s:.0f}")
        if self.open_tracker is not None and self.rank == 0:  # per-step curves
            self._tracker().log_step(self.step, loss, float(logs["lr"]))

    def _stop_vote(self) -> int:
        """The stop code every rank agrees on after a step: a stop signal's (1, 2), or 0 to go on. A rank past
        data.max_bad_fraction makes every rank raise its one-line error."""
        bad_data = self.pretrain.bad_data_error
        local = max(self.stop_code, BAD_DATA_CODE if bad_data else 0)
        code = local if self.stop_vote is None else self.stop_vote(local)
        if code == BAD_DATA_CODE:
            raise bad_data or UserError(
                f"another process read more unreadable samples than data.max_bad_fraction allows; see "
                f"{self.run_dir / 'bad_samples.txt'}")
        return code

    def _make_views(self, x_uint8: torch.Tensor | list[torch.Tensor], step: int) -> Views:
        gen = step_generator(self.device, self.seed, step)
        if self.world > 1:
            views = ddp.shard_views(self.views, x_uint8, gen, self.rank, self.world)
        else:
            views = self.make_views(x_uint8, gen)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views

    def _train_step(self, x_uint8: torch.Tensor | list[torch.Tensor] | None, y: torch.Tensor,
                    views: Views | None = None) -> dict[str, torch.Tensor]:
        """One step on x_uint8's views, or on `views` already made for this step (prefetched, or synthetic
        ones in benchmarks/throughput.py)."""
        progress = self.step / self.total_steps
        if self.settings.cuda_graphs:  # a new step: CUDA-graph outputs of the last one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        lr = self.settings.schedule.lr(self.step)
        set_lr(self.optimizer, lr, self.settings.schedule.peak_lr)
        if views is None:
            views = self._make_views(x_uint8, self.step)
        with self.autocast:
            out = self.step_fn(views, progress)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.method.before_optimizer_step(progress)
        if self.settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.method.after_step(progress)
        self.step += 1
        logs = {"loss": out.loss.detach().float(), "lr": lr, **out.logs, **self.probe.logs(out.features, y)}
        for k, v in logs.items():  # tensors summed on the device, numbers on the host: no sync, no copy
            if isinstance(v, torch.Tensor):
                self.sums[k] = self.sums.get(k, torch.zeros((), device=self.device)) + v.detach().float()
            else:
                self.host_sums[k] = self.host_sums.get(k, 0.0) + float(v)
        self.host_sums["n"] = self.host_sums.get("n", 0.0) + 1
        return logs

    # --- per epoch ---------------------------------------------------------------------------------------
    def _end_epoch(self, epoch: int) -> None:
        if self.world > 1:  # the epoch's means over every rank's batches (images are counted globally)
            keys = sorted(self.sums)
            mean = distributed.all_reduce_mean_(torch.stack([self.sums[k].float() for k in keys]))
            self.sums = dict(zip(keys, mean.unbind()))
        sums = {k: v.item() for k, v in self.sums.items()}
        for k, v in self.host_sums.items():  # python-number logs (the same on every rank), float64 on the host:
            sums[k] = sums.get(k, 0.0) + v  # a resumed epoch adds up exactly as an uninterrupted one
        self.sums, self.host_sums = {}, {}
        n = max(sums.pop("n", 1.0), 1.0)
        images, seconds = sums.pop("images", 0.0), sums.pop("seconds", 1e-9)
        if not math.isfinite(sums["loss"]):
            raise Diverged(f"loss is {sums['loss'] / n} at step {self.step}, epoch {epoch + 1}")
        if self.rank != 0:
            return
        row = {"epoch": epoch + 1, "step": self.step}
        row.update({k: v / n for k, v in sums.items()})
        if "online_probe_labelled" in row:  # accuracy over the epoch's labelled images, not a mean of batch means
            correct, labelled = row.pop("online_probe_correct"), row.pop("online_probe_labelled")
            row["online_probe_acc"] = 100.0 * correct / max(labelled, 1e-9)
        row.update(self.monitor.metrics(self.method))
        row.update(self.method.epoch_logs())  # the method's own state (a linear predictor's alignment)
        row["images_per_s"] = images / max(seconds, 1e-9)
        self.rows.append(row)
        write_metrics(self.run_dir, self.rows)
        if self.open_tracker is not None:  # tensorboard or wandb
            self._tracker().log(row)
        line = (f"epoch {epoch + 1}/{self.num_epochs}: loss {row['loss']:.4f}  z_std {row['z_std']:.4f}  "
                f"{row['images_per_s']:.0f} img/s")
        tqdm.write(line) if self.show_bar else print(line, flush=True)  # one line per epoch, bar or not

    def _tracker(self):
        if self.tracker is None:
            self.tracker = self.open_tracker()
        return self.tracker

    @property
    def show_bar(self) -> bool:
        """A live bar only on a terminal: in log files (SLURM logs) its carriage returns are clutter."""
        return self.settings.progress_bar and sys.stderr.isatty()
