"""The training loop: views -> method step -> optimizer -> target rule, with schedules, checkpoints, monitors.

Every random draw is derived from (seed, epoch) for the data order and (seed, step) for the views, so a run
resumed from any checkpoint replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from ssl_zoo.common import distributed, stopping
from ssl_zoo.common.errors import UserError
from ssl_zoo.common.stopping import STOP_SIGNALS, Preempted
from ssl_zoo.data.datasets import ImageData
from ssl_zoo.data.views import build_view_maker, plain_view
from ssl_zoo.evaluation import monitors
from ssl_zoo.models.encoders import build_encoder, has_convolutions
from ssl_zoo.models.method import Method, method_class
from ssl_zoo.runs.checkpoint import RESUME_KEYS, find_checkpoint, save_checkpoint
from ssl_zoo.runs.rundir import write_config, write_metrics
from ssl_zoo.train import ddp
from ssl_zoo.train.optim import build_optimizer, lr_at, peak_lr, set_lr
from ssl_zoo.train.prefetch import ViewPrefetcher
from ssl_zoo.train.tensorboard import open_tracker

PREEMPTED_EXIT_CODE = 3  # a run stopped by SIGTERM/SIGUSR2 after checkpointing; starting it again resumes
BAD_DATA_CODE = len(STOP_SIGNALS) + 1  # a rank passed data.max_bad_fraction: every rank stops with it (one vote)


class Diverged(Exception):
    """The loss became NaN or infinite."""


def pick_device(cfg: DictConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible; use device=auto or device=cpu")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if distributed.is_distributed():  # one GPU per process on its node
        return torch.device("cuda", distributed.local_rank() % torch.cuda.device_count())
    return torch.device("cuda")


def build_method(cfg: DictConfig, seed_offset: int = 0, epochs: float | None = None) -> Method:
    """The method with its encoder, initialised from the seed (the same seed gives the same initial weights).
    `epochs`: the run's length in epochs for the method's epoch-based schedules (trainer.epochs by default)."""
    torch.manual_seed(int(cfg.seed) + seed_offset)
    backbone, feat_dim = build_encoder(cfg.encoder, int(cfg.data.channels), int(cfg.data.image_size))
    return method_class(str(cfg.method.name))(backbone, feat_dim, cfg.method,
                                              int(cfg.trainer.epochs) if epochs is None else epochs)


def pretrain_size(data) -> int:
    """Images pretraining draws from: in memory (data.ImageData) or streamed (ssl_zoo.data.streaming)."""
    return len(data.pretrain_rows) if is_streamed(data) else len(data.pretrain_x)


def is_streamed(data) -> bool:
    return hasattr(data, "pretrain_rows")


def run_length(cfg: DictConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the run: trainer.steps when set (the last epoch may then be partial), else
    trainer.epochs whole epochs. Every schedule (LR, tau, warm-ups) follows this count."""
    steps = cfg.trainer.get("steps")
    return int(steps) if steps is not None else int(cfg.trainer.epochs) * steps_per_epoch


def step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


class Trainer:
    def __init__(self, cfg: DictConfig, data: ImageData, run_dir: Path):
        """`data` is an ImageData (uint8 tensors, views made from whole images) or a streamed dataset
        (ssl_zoo.data.streaming: DataLoader workers read and crop, the rest of each view is made here)."""
        self.cfg, self.data, self.run_dir = cfg, data, run_dir
        self.device = pick_device(cfg)
        self.seed = int(cfg.seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.mean, self.std = list(cfg.data.mean), list(cfg.data.std)
        self.views = build_view_maker(cfg.views, self.mean, self.std)
        # DDP: trainer.batch_size images per process; the epoch order, the views, the LR and the checkpoints
        # follow the global batch of world x batch_size images (ssl_zoo.train.ddp), so a run matches one process
        # with that batch. Only rank 0 writes run files.
        self.world, self.rank = distributed.world_size(), distributed.rank()
        t = cfg.trainer
        self.batch_size = int(t.batch_size)  # per process
        self.global_batch = self.batch_size * self.world
        self.streamed = is_streamed(data)
        self.num_images = pretrain_size(data)
        self.steps_per_epoch = self.num_images // self.global_batch
        if self.steps_per_epoch == 0:
            raise UserError(f"trainer.batch_size={self.batch_size} x {self.world} process(es) is larger than the "
                            f"{self.num_images} training images; lower it")
        self.total_steps = run_length(cfg, self.steps_per_epoch)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        length = None if t.get("steps") is None else self.total_steps / self.steps_per_epoch  # epoch-based schedules
        self.method = build_method(cfg, epochs=length).to(self.device)
        if self.world > 1 and cfg.launcher.get("sync_bn", False):
            self.method = ddp.sync_batchnorm(self.method, self.device)
        # channels_last: cuDNN's and oneDNN's fast convolution layout (on 2 CPU cores 20-30% off a small CNN's or
        # ResNet-18's step). auto: on CUDA; on a CPU too unless deterministic=true, because oneDNN's channels_last
        # batch norm sums in an order that depends on the thread count (a few steps then differ by ~1e-2 between
        # core counts and from DDP), where the default layout gives the same bits on any number of threads.
        auto = has_convolutions(self.method) and (self.device.type == "cuda" or not cfg.deterministic)
        self.channels_last = cfg.trainer.channels_last is True or (cfg.trainer.channels_last == "auto" and auto)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.method.param_groups(), cfg.trainer)
        if self.streamed:
            from ssl_zoo.data.streaming.bad_samples import BadSampleLog
            from ssl_zoo.data.streaming.loader import CropSpec

            self.crop_specs = [CropSpec(r.n, r.size, tuple(r.scale), tuple(r.ratio)) for r in self.views.recipes]
            self.bad_samples = BadSampleLog(run_dir, len(data.train),
                                            data.max_bad_fraction)
        else:
            self.images = data.pretrain_x.to(self.device)
            unlabeled = len(self.images) - len(data.train_y)  # STL-10's unlabeled images carry label -1
            self.labels = torch.cat([data.train_y, data.train_y.new_full((unlabeled,), -1)]).to(self.device)
        # Online probe: a linear classifier on detached backbone features, trained alongside; reported as
        # online_probe_acc (an ONLINE number, not comparable to the frozen-feature linear probe).
        self.probe = torch.nn.Linear(self.method.feat_dim, data.num_classes).to(self.device)
        self.probe_opt = torch.optim.AdamW(self.probe.parameters(), lr=1e-3, weight_decay=0.0)
        self.warmup_steps = min(int(float(t.warmup_epochs) * self.steps_per_epoch), self.total_steps)
        self.peak_lr = peak_lr(t, self.global_batch)
        bf16 = t.precision == "bf16" or (t.precision == "auto" and self.device.type == "cuda")
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext())
        self.step_fn = ddp.wrap(self.method, self.device) if self.world > 1 else self.method.training_step
        # trainer.compile: each part of the method is compiled in place (state_dict keys unchanged), and the view
        # maker too. Not training_step as a whole: its python-float `progress` would recompile it every step.
        self.make_views = self.views
        if t.compile:
            # The parts share one code object (Module._call_impl): each part and mode is one dynamo cache entry.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            for part in self.method.children():
                part.compile(mode=str(t.compile_mode))
            self.make_views = torch.compile(self.views)
        self.cuda_graphs = bool(t.compile) and t.compile_mode == "reduce-overhead"
        self.prefetch_views = self.device.type == "cuda"  # next batch's views on a side stream (gpu_loader)
        self.stop_vote = ddp.StopVote() if self.world > 1 else None
        monitor_x = data.test_x[: int(cfg.monitor.num_images)]
        self.monitor_x = monitor_x if isinstance(monitor_x, torch.Tensor) else monitor_x.to("cpu")  # decoded once
        self.step, self.rows, self.elapsed = 0, [], 0.0
        self.sums: dict[str, torch.Tensor] = {}
        self.host_sums: dict[str, float] = {}  # python-number logs (lr, tau, ...): summed here, no device copy
        self.stop_requested = False  # set at a step boundary, by every rank at the same step
        self.tracker = None  # TensorBoard or wandb (logger=...), created on first use
        self.stop_code = 0  # set by the signal handler: 1 SIGTERM, 2 SIGUSR2
        self.bad_data_error: UserError | None = None  # set when this rank's unreadable samples pass the limit

    # --- checkpoints -------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "probe": self.probe.state_dict(), "probe_opt": self.probe_opt.state_dict(),
                "rows": self.rows, "elapsed": self.elapsed,
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
        self.keep_previous = path.name == "last.pt"  # never rotate an unreadable last.pt into prev.pt
        if int(state.get("world_size", 1)) != self.world:
            raise UserError(f"checkpoint in {self.run_dir} comes from {state.get('world_size', 1)} process(es), "
                            f"this run has {self.world}: the global batch would change; resume it on "
                            f"{state.get('world_size', 1)} or train under another run_name")
        try:
            self.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.probe.load_state_dict(state["probe"])
            self.probe_opt.load_state_dict(state["probe_opt"])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise UserError(f"checkpoint {path} does not fit this config ({type(err).__name__}); delete "
                            f"{path.parent} to restart the run, or train under another run_name") from err
        self.step, self.rows, self.elapsed = int(state["step"]), list(state["rows"]), float(state["elapsed"])
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.host_sums = dict(state.get("host_sums", {}))
        if rewrite_metrics and self.rank == 0:  # rows written after this checkpoint (then a kill) are dropped
            write_metrics(self.run_dir, self.rows)
        return True

    def checkpoint(self) -> None:
        self._check_finite()
        if self.rank == 0:
            save_checkpoint(self.run_dir, self.state(), keep_previous=getattr(self, "keep_previous", True))
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
    def _request_stop(self, signum, frame) -> None:
        self.stop_code = max(self.stop_code, STOP_SIGNALS.index(signum) + 1)

    def fit(self) -> None:
        handlers = {s: signal.signal(s, self._request_stop) for s in STOP_SIGNALS}
        self.stop_code = max(self.stop_code, stopping.code())  # one received during set-up: stop at the first step
        try:
            self._fit()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    def _epoch_end(self, epoch: int) -> int:
        """The step after the epoch's last one (a trainer.steps run may end inside an epoch)."""
        return min((epoch + 1) * self.steps_per_epoch, self.total_steps)

    def _fit(self) -> None:
        every = int(self.cfg.trainer.checkpoint_every)
        if self.step == 0:  # a run that diverges or is killed in its first epoch still has a whole checkpoint
            if self.rank == 0 and not (self.run_dir / "config.yaml").exists():  # Trainer(...).fit() from Python:
                write_config(self.run_dir, self.cfg)  # a run directory `ssl-zoo eval` and run.train accept
            self.checkpoint()
        while self.step < self.total_steps:
            epoch = self.step // self.steps_per_epoch
            self._run_epoch(epoch)
            if self.stop_requested:
                if self.step == self._epoch_end(epoch):  # stopped on the epoch's last step: its row
                    self._end_epoch(epoch)  # belongs in this checkpoint, the resumed run starts the next epoch
                self.checkpoint()
                raise Preempted(f"stopped at step {self.step}; checkpoint saved",
                                STOP_SIGNALS[max(self.stop_code, 1) - 1])
            self._end_epoch(epoch)
            if (epoch + 1) % every == 0 or self.step == self.total_steps:
                self.checkpoint()
        code = self.stop_code if self.stop_vote is None else self.stop_vote(self.stop_code)
        if code:  # the signal came after the last step: the final checkpoint is whole, a restart evaluates
            raise Preempted(f"stopped at step {self.step} (the last); checkpoint saved", STOP_SIGNALS[code - 1])
        if self.rank == 0:
            monitors.save_spectra(self.run_dir, self.method, self.monitor_input())  # spectrum.npy at the end

    def _batches(self, epoch: int, first: int, end: int):
        """(uint8 input, labels) of batches first..end-1 of the epoch, on the device: index rows of the in-memory
        images, or the crops the streaming workers made (the same global order either way: epoch_order)."""
        if self.streamed:
            order = epoch_order(self.num_images, self.seed, epoch).numpy()
            pin = self.device.type == "cuda"
            loader = self.data.train_loader(self.crop_specs, self.seed, epoch, order, range(first, end),
                                            self.batch_size, self.rank, self.world, pin)
            for crops, labels, bad in loader:
                if bad:
                    try:
                        self.bad_samples.add(bad)
                    except UserError as err:  # raised at the step's stop vote, on every rank at once
                        self.bad_data_error = err
                yield ([c.to(self.device, non_blocking=pin) for c in crops],
                       labels.to(self.device, non_blocking=pin))
            return
        order = epoch_order(len(self.images), self.seed, epoch).to(self.device)  # one copy per epoch
        for i in range(first, end):  # this rank's slice of the global batch i
            start_i = i * self.global_batch + self.rank * self.batch_size
            idx = order[start_i:start_i + self.batch_size]
            yield self.images[idx], self.labels[idx]

    def _run_epoch(self, epoch: int) -> None:
        self.method.train()
        first = self.step - epoch * self.steps_per_epoch
        end = self._epoch_end(epoch) - epoch * self.steps_per_epoch
        log_every = max(1, int(self.cfg.trainer.log_every))
        bar = tqdm(range(first, end), desc=f"epoch {epoch + 1}/{self.num_epochs}",
                   disable=not self.show_bar, leave=False, dynamic_ncols=True)
        start, done = time.perf_counter(), 0
        batches = self._batches(epoch, first, end)
        labels: dict[int, torch.Tensor] = {}

        def views_of(i: int) -> list[torch.Tensor]:  # called in order i = first, first + 1, ...
            x, labels[i] = next(batches)
            return self._make_views(x, epoch * self.steps_per_epoch + i)

        ahead = ViewPrefetcher(views_of, self.device, end) if self.prefetch_views else None
        for i in bar:
            if ahead is not None:
                x, views = None, ahead.get(i)
                y = labels.pop(i)
                if y.is_cuda:  # made on the prefetch stream, read on this one (as ViewPrefetcher does for views)
                    y.record_stream(torch.cuda.current_stream(self.device))
            else:
                (x, y), views = next(batches), None
            logs = self._train_step(x, y, views)
            done += self.global_batch
            if (i + 1) % log_every == 0:
                loss = distributed.all_reduce_mean_(logs["loss"].clone()).item()  # every rank decides alike
                if not math.isfinite(loss):
                    raise Diverged(f"loss is {loss} at step {self.step}, epoch {epoch + 1}")
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{done / (time.perf_counter() - start):.0f}")
                if self.cfg.logger != "csv" and self.rank == 0:  # per-step curves, every log_every steps
                    self._tracker().log_step(self.step, loss, float(logs["lr"]))
            local = max(self.stop_code, BAD_DATA_CODE if self.bad_data_error else 0)
            code = local if self.stop_vote is None else self.stop_vote(local)
            if code == BAD_DATA_CODE:
                raise self.bad_data_error or UserError(
                    f"another process read more unreadable samples than data.max_bad_fraction allows; see "
                    f"{self.run_dir / 'bad_samples.txt'}")
            if code:
                self.stop_requested, self.stop_code = True, code
                break
        self.elapsed += time.perf_counter() - start
        self.sums["images"] = self.sums.get("images", torch.zeros((), device=self.device)) + done
        self.sums["seconds"] = self.sums.get("seconds", torch.zeros((), device=self.device)) + (
            time.perf_counter() - start)

    def _make_views(self, x_uint8: torch.Tensor | list[torch.Tensor], step: int) -> list[torch.Tensor]:
        gen = step_generator(self.device, self.seed, step)
        if self.world > 1:
            views = ddp.shard_views(self.views, x_uint8, gen, self.rank, self.world)
        else:
            views = self.make_views(x_uint8, gen)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views

    def _train_step(self, x_uint8: torch.Tensor | list[torch.Tensor] | None, y: torch.Tensor,
                    views: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One step on x_uint8's views, or on `views` already made for this step (prefetched, or synthetic
        ones in benchmarks/throughput.py)."""
        progress = self.step / self.total_steps
        if self.cuda_graphs:  # a new step: CUDA-graph outputs of the last one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        lr = lr_at(self.step, self.total_steps, self.warmup_steps, self.peak_lr, float(self.cfg.trainer.min_lr))
        set_lr(self.optimizer, lr, self.peak_lr)
        if views is None:
            views = self._make_views(x_uint8, self.step)
        with self.autocast:
            out = self.step_fn(views, progress)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.method.before_optimizer_step(progress)
        if self.cfg.trainer.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), float(self.cfg.trainer.grad_clip))
        self.optimizer.step()
        self.method.after_step(progress)
        self.step += 1
        logs = {"loss": out.loss.detach().float(), "lr": lr, **out.logs}
        if out.features is not None and self.cfg.eval.online_probe:
            logs["online_probe_correct"], logs["online_probe_labelled"] = self._probe_step(
                out.features.detach().float(), y)
        for k, v in logs.items():  # tensors summed on the device, numbers on the host: no sync, no copy
            if isinstance(v, torch.Tensor):
                self.sums[k] = self.sums.get(k, torch.zeros((), device=self.device)) + v.detach().float()
            else:
                self.host_sums[k] = self.host_sums.get(k, 0.0) + float(v)
        self.host_sums["n"] = self.host_sums.get("n", 0.0) + 1
        return logs

    def _probe_step(self, features: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update of the online probe; (correct, labelled) counts of the batch, scored before the update.
        Unlabelled images (label -1, STL-10) are left out; a batch without any gives a zero loss, not NaN."""
        logits = self.probe(features)
        labelled = y >= 0
        loss = torch.nn.functional.cross_entropy(logits, y, ignore_index=-1, reduction="sum") / labelled.sum().clamp_min(1)
        self.probe_opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.world > 1:
            ddp.average_grads_(self.probe.parameters())
        self.probe_opt.step()
        return ((logits.argmax(1) == y) & labelled).sum(), labelled.sum()

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
        row.update(self.monitor())
        row["images_per_s"] = images / max(seconds, 1e-9)
        self.rows.append(row)
        write_metrics(self.run_dir, self.rows)
        if self.cfg.logger != "csv":  # tensorboard or wandb
            self._tracker().log(row)
        line = (f"epoch {epoch + 1}/{self.num_epochs}: loss {row['loss']:.4f}  z_std {row['z_std']:.4f}  "
                f"{row['images_per_s']:.0f} img/s")
        tqdm.write(line) if self.show_bar else print(line, flush=True)  # one line per epoch, bar or not

    def _tracker(self):
        if self.tracker is None:
            self.tracker = open_tracker(self.cfg, self.run_dir)
        return self.tracker

    @property
    def show_bar(self) -> bool:
        """A live bar only on a terminal: in log files (SLURM logs) its carriage returns are clutter."""
        return bool(self.cfg.progress_bar) and sys.stderr.isatty()

    def monitor_input(self) -> torch.Tensor:
        return plain_view(self.monitor_x.to(self.device), int(self.cfg.data.image_size), self.mean, self.std)

    def monitor(self) -> dict[str, float]:
        # Two augmented views of the held-out images from a fixed generator (the same pairs every epoch, drawn
        # apart from the training draws) give alignment and uniformity.
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 0x5EED)
        views = self.views(self.monitor_x.to(self.device), gen)[:2]
        return monitors.collapse_metrics(self.method, self.monitor_input(), views)
