"""`selfsup train`: resolve the configuration, build data + views + method, and fit with Lightning."""

import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from selfsup import __version__
from selfsup.checkpoints import LAST, inside, latest_good_checkpoint, step_checkpoints
from selfsup.data import (
    BadImageError,
    FolderImageSet,
    ImageSet,
    ShardSet,
    SkipBadImages,
    cached_scan,
    is_shard_spec,
    open_shards,
    open_unlabeled,
)
from selfsup.data.folder import SIZE_MAX, SIZE_MIN, SIZE_STEP, folder_image_size
from selfsup.data.tiff import TiffImageSet
from selfsup.errors import SelfsupError
from selfsup.methods import RENAMED, Method, build, make_config, method_class
from selfsup.nn.backbones import check_vit_input_side
from selfsup.ranges import check_ranges
from selfsup.train import recipes
from selfsup.train.config import TrainConfig, check_choices, split_options
from selfsup.train.module import GlobalBatchNormSync, SelfsupModule, StepCheckpoints, make_trainer
from selfsup.train.probe import KnnProbe, open_probe
from selfsup.train.resume import EpochSampler, KeyedSamples
from selfsup.train.shard_stream import ShardStream
from selfsup.train.throughput import StepTimer
from selfsup.views import TransformedImages, channels_of

DEFAULT_EPOCHS = 100
FOLDER_IMAGE_SIZE = 224  # tar shards without --image-size (a folder's default follows its images)
BAD_IMAGES = "bad_images.txt"  # in the run folder: 'path<TAB>reason' for every image file skipped
# Lightning's DDP launcher starts ranks 1.. by running the same command again; this tells them the run folder.
RUN_DIR_ENV = "SELFSUP_RUN_DIR"


def train(method_name: str, options: dict[str, Any], out: str | None = None, resume: bool = False,
          progress: bool = True) -> Path:
    """Pretrain `method_name` with flat `options` (method and run fields); returns the run folder.

    With resume, the run folder's newest readable checkpoint supplies the configuration (`options`
    may still change e.g. max_steps), the weights, optimiser, schedule, step count, random states
    and position in the data, so the run goes on as if it had never stopped.
    """
    cls = method_class(method_name)
    run_dir = _run_dir(method_name, out, resume)
    folder = inside(run_dir, "checkpoints")
    checkpoint_path, checkpoint = _resume_point(folder, method_name) if resume else (None, None)
    if checkpoint is not None:
        saved = {RENAMED.get(k, k): v for k, v in checkpoint["selfsup"]["method_config"].items()}
        options = cls.as_saved(options)
        _check_resumable(options, {**checkpoint["selfsup"]["train"], **saved})
        options = {**checkpoint["selfsup"]["train"], **saved, **options}
    elif (folder / LAST).exists() or step_checkpoints(folder):
        raise SelfsupError(f"'{run_dir}' already holds a run; pass --resume to continue it, or another --out")
    opened, recipe_line = None, ""
    if checkpoint is None:  # a resumed run keeps the options its recipe chose
        options, opened, recipe_line = _with_recipe(cls, options)
    method_options, train_options = split_options(options, cls.config_class)
    check_ranges(options)  # every number, the method's and the run's, before anything is built
    config = TrainConfig(**{**cls.run_defaults, **train_options})
    check_choices(config)
    if config.batch_size < 2:
        raise SelfsupError("batch_size must be at least 2: contrastive losses need another example in the batch "
                           "and BatchNorm cannot normalise one; pass --batch-size 2 or more")
    if config.on_nan_loss == "skip" and config.devices * config.num_nodes > 1:
        raise SelfsupError("on_nan_loss=skip works on one device only (Lightning cannot skip a step under DDP); "
                           "drop it, or train on one device")
    if config.bands and cls.modality != "image":
        raise SelfsupError(f"--bands picks bands of TIFF tiles for image methods, and {cls.name} trains on "
                           f"{cls.modality}: drop --bands")
    if config.channels_last and cls.modality == "video":  # torch's channels_last is the 4-D layout only
        raise SelfsupError(f"--channels-last is the memory layout of 4-D image tensors, and {cls.name}'s clips and "
                           "3-D convolutions are 5-D: drop --channels-last")
    probe = open_probe(config, cls.modality)  # its labelled sample, or a refusal, before anything is written
    L.seed_everything(config.seed, workers=True, verbose=False)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)

    # Image methods share the image openers (folders, shards, bad files, batched views); others open their own data.
    try:
        if cls.modality == "image":
            setup = _image_setup(cls, method_options, config, run_dir, checkpoint, opened)
        else:
            setup = _opened_setup(cls, method_options, config, run_dir, checkpoint)
    except BaseException:  # bad data or method options: leave no empty run folder behind
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    method = setup.method
    timer = StepTimer()
    trainer = _trainer(config, run_dir, folder, progress, [timer], [probe] if probe else [])
    trainer.callbacks.append(timer.tail)  # after Lightning's own (the progress bar): the wait for data starts there
    n_samples = len(setup.samples)
    prepared = [n_samples, n_samples // (config.batch_size * trainer.world_size)]
    meta = {"method": method_name, "modality": cls.modality, "version": __version__, "seed": config.seed,
            **setup.meta, "data_meta": method.data_meta, "prepared": prepared,
            "train": dataclasses.asdict(config), "method_config": dataclasses.asdict(method.config)}
    if trainer.global_rank == 0:  # data_meta (a tokenizer, say) is in every checkpoint; too long to read here
        readable = {k: v for k, v in meta.items() if k != "data_meta"}
        inside(run_dir, "config.yaml").write_text(yaml.safe_dump(readable, sort_keys=False))

    samples, sampler = _keyed_samples(setup.samples, setup.views, config, run_dir)
    if checkpoint is not None:  # mid-epoch: skip the batches already trained on
        (sampler or samples).resume_at(checkpoint["global_step"])
    loader = train_loader(samples, config, setup.batched, sampler, setup.collate)
    if isinstance(samples, ShardStream):
        samples.check_readers(trainer.world_size, loader.num_workers)
    warning = method.prepare(*prepared)
    n_params = sum(p.numel() for p in method.encoder().parameters()) / 1e6
    say = print if trainer.global_rank == 0 else (lambda *_: None)  # one summary, not one per process
    say(f"{method_name} | {method.network_name()} ({n_params:.1f}M params) | "
        f"{n_samples} {setup.noun} from {config.data}{setup.note}{_inputs(setup, loader)} | batch {config.batch_size}"
        f"{f' x {trainer.world_size} devices' if trainer.world_size > 1 else ''} | {resolved_precision(config)} | "
        f"run folder {run_dir} (logs: logs/csv/version_{trainer.loggers[0].version}/metrics.csv, logs/tensorboard)")
    if recipe_line:
        say(f"{recipe_line}; --recipe paper for the paper's settings")
    if warning and trainer.global_rank == 0:
        print(f"selfsup: warning: {warning}", file=sys.stderr)
    module = SelfsupModule(method, meta, setup.batch_views, config.on_nan_loss, _channels_last(config),
                           config.monitor_every)
    if config.compile:
        method.encoder().compile()  # in place: the state_dict keys stay those of the plain backbone
    start = time.time()
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        trainer.fit(module, loader, ckpt_path=str(checkpoint_path) if checkpoint_path else None)
    except SIGTERMException:
        raise TrainingInterrupted(f"stopped by SIGTERM after step {trainer.global_step}; checkpoint "
                                  f"'{folder / LAST}' holds it: continue with --resume --out {run_dir}") from None
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    seconds = time.time() - start
    skipped = f"; skipped steps with a NaN/inf loss: {module.skipped_steps}" if module.skipped_steps else ""
    saved = f"checkpoint: {folder / LAST}" if (folder / LAST).exists() else "no checkpoint was written"
    say(f"trained {trainer.global_step} steps in {seconds:.0f}s; {saved}"
        f"{_late_bad_images(run_dir)}{skipped}{_probed(probe, seconds)}")
    report = timer.report(config.batch_size * trainer.world_size, setup.noun, _hints(setup, loader))
    if report:
        say(report)
    return run_dir


def _probed(probe: KnnProbe | None, seconds: float) -> str:
    """'; online kNN top-1 ...' for the closing line when the probe ran."""
    if probe is None or probe.last is None:
        return ""
    step, top1 = probe.last
    return (f"; online kNN top-1 {top1:.4f} at step {step} ({probe.describe()}; the probe took {probe.seconds:.1f}s, "
            f"{probe.seconds / max(seconds, 1e-9):.0%} of the run)")


def _hints(setup: "_Setup", loader: DataLoader) -> list[str]:
    """What makes the data side faster, for the data-bound report."""
    hints = [] if setup.batched else [f"more --num-workers (now {loader.num_workers})"]
    if setup.can_batch and not setup.batched:
        hints.append("views made on the device (--set batched_views=true)")
    if setup.input_shape:
        hints.append(f"a smaller --image-size (now {setup.meta['image_size']})")
    return hints


@dataclasses.dataclass
class _Setup:
    """What `train` needs from the data side: the method, the samples and how the loader batches them."""

    method: Any
    meta: dict[str, Any]  # what the checkpoint records about the data
    samples: Dataset
    views: Any = None  # per-sample view recipe applied in the loader; None: the loader only stacks samples
    batched: bool = False  # the loader stacks uint8 images and `batch_views` makes the views on the device
    batch_views: Any = None
    collate: Any = None  # the loader's collate_fn; None: torch's default
    input_shape: str = ""  # images: "CxS px" and how S was chosen
    views_name: str = ""  # images: the view recipe's class
    can_batch: bool = False  # the views could be made on the device (images of one size, a recipe with `batch`)
    noun: str = "images"
    note: str = ""


def _with_recipe(cls: type[Method], options: dict[str, Any]) -> tuple[dict[str, Any], Any, str]:
    """(options with the recipe's under the user's, None or (the opened training images, their `_image_size`), the
    recipe's line).

    The recipe (train/recipes.py) is chosen from the device, the images' side and their number, so an image
    method's data is opened and sized here, once, and handed on to `_image_setup`."""
    requested = options.get("recipe", TrainConfig.recipe)
    backbone = getattr(cls.config_class, "backbone", None) if cls.modality == "image" else None
    if requested == "paper" or backbone is None:
        recipes.choose(cls.name, None, requested, None)  # still refuses an unknown name
        return options, None, ""
    data = options.get("data", cls.run_defaults.get("data", TrainConfig.data))
    images = open_shards(data) if is_shard_spec(data) else open_unlabeled(data)
    sized = _image_size(options.get("image_size"), images, None)
    n_images = min(len(images), options.get("limit_samples") or len(images))
    accelerator = options.get("accelerator", TrainConfig.accelerator)
    gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    name, chosen, line = recipes.choose(cls.name, backbone, requested, recipes.DataFacts(n_images, sized[0], gpu))
    if not line:  # no recipe for this method's network (a ViT's CPU sizes are its defaults): nothing to say
        return {**options, "recipe": name}, (images, sized), ""
    merged, applied = recipes.merge(chosen, options)
    return {**merged, "recipe": name}, (images, sized), recipes.describe(line, applied, merged, n_images)


def _image_setup(cls: type[Method], method_options: dict[str, Any], config: TrainConfig, run_dir: Path,
                 checkpoint: dict[str, Any] | None, opened: tuple[Any, tuple[int, str]] | None = None) -> _Setup:
    if opened is None:
        images = open_shards(config.data) if is_shard_spec(config.data) else open_unlabeled(config.data)
    else:  # opened and sized for the recipe; a size the recipe set wins over the images' own
        images, sized = opened
    if config.bands and not isinstance(images, TiffImageSet):
        raise SelfsupError(f"--bands picks bands of TIFF tiles, and {config.data} is not a folder of TIFF files: "
                           "drop --bands")
    images = images.pick_bands(config.bands) if config.bands else images
    channels, native_size = images.channels, images.native_size
    # of the whole folder, before limit_samples
    image_size, size_note = (sized if opened and not config.image_size else
                             _image_size(config.image_size, images, checkpoint))
    data_meta = {"in_chans": channels, "image_size": image_size}
    if isinstance(images, TiffImageSet):  # band statistics: measured once, kept by a resumed run
        saved = checkpoint["selfsup"].get("data_meta", {}).get("bands") if checkpoint else None
        data_meta["bands"] = saved or images.band_meta()
    images, skipped_note = _usable_images(_limited(images, config), config, run_dir)
    images, native_size, size_note = _cut_tiles(images, image_size, native_size, size_note)
    _check_one_batch(len(images), "usable images", config, skipped_note)
    method = build(cls.name, data_meta, **method_options)
    check_vit_input_side(method, image_size)
    views = method.default_views(image_size, channels_of(data_meta))  # a TIFF run's views use its band statistics
    batched = config.batched_views if config.batched_views is not None else native_size is not None
    batched = batched and views.batch is not None
    if config.batched_views and views.batch is None:
        raise SelfsupError(f"{cls.name}'s views carry masks with each image and are made per sample in the loader; "
                           "drop --set batched_views=true")
    if batched and native_size is None:
        raise SelfsupError(f"batched_views needs images of one size, and those in {config.data} vary; "
                           "drop --set batched_views=true")
    images = method.training_images(images)
    return _Setup(method, data_meta, images,
                  views=None if batched else views, batched=batched, batch_views=views if batched else None,
                  input_shape=f"{channels}x{image_size} px{size_note}", views_name=type(views).__name__,
                  can_batch=native_size is not None and views.batch is not None, note=skipped_note)


def _cut_tiles(images: Dataset, side: int, native_size: int | None, size_note: str) -> tuple[Dataset, int | None, str]:
    """TIFF tiles (possibly wrapped to skip bad files) cut into random side x side windows where they are large
    (data.tiff.TiffImageSet.windows); other images as they are. Returns (images, their native size, size note)."""
    inner = images.images if isinstance(images, SkipBadImages) else images
    if not isinstance(inner, TiffImageSet):
        return images, native_size, size_note
    tiles, cut = len(set(map(str, inner.paths))), inner.windows(side)
    if len(cut) > tiles:
        size_note += f", {len(cut)} random {side} px windows per epoch from {tiles} tile{'s' * (tiles > 1)}"
    return (SkipBadImages(cut, images.log_file) if images is not inner else cut), cut.native_size, size_note


def _inputs(setup: _Setup, loader: DataLoader) -> str:
    """' | 1x28 px | views SimCLRViews, batched on the device' for the summary of an image run, else ''."""
    if not setup.input_shape:
        return ""
    workers = loader.num_workers
    where = ("batched on the device" if setup.batched else
             f"per sample in {workers} loader worker{'s' * (workers > 1)}" if workers else
             "per sample in the main process")
    return f" | {setup.input_shape} | views {setup.views_name}, {where}"


def _image_size(requested: int | None, images: Any, checkpoint: dict[str, Any] | None) -> tuple[int, str]:
    """(training side, how it was chosen, for the summary): --image-size, a resumed run's own, a built-in set's own,
    or for a folder the rule of data.folder.folder_image_size (tar shards: FOLDER_IMAGE_SIZE)."""
    if requested:
        return requested, ""
    if checkpoint is not None:  # the size the run was made with, even if the folder changed since
        return checkpoint["selfsup"]["image_size"], ""
    if images.native_size:
        return images.native_size, " (the set's own)"
    found = folder_image_size(images.paths) if isinstance(images, FolderImageSet) else None
    if found is None:
        return FOLDER_IMAGE_SIZE, " (the default for tar shards; --image-size to change)"
    size, median = found
    return size, (f" (the images' median shorter side, {median:g} px, rounded to a multiple of {SIZE_STEP} within "
                  f"[{SIZE_MIN}, {SIZE_MAX}]; --image-size to change)")


def _opened_setup(cls: type[Method], method_options: dict[str, Any], config: TrainConfig, run_dir: Path,
                  checkpoint: dict[str, Any] | None) -> _Setup:
    """A method of another modality opens its data itself; a resumed run reuses the checkpoint's data_meta (its
    tokenizer), so the network fits the saved weights."""
    method_config = make_config(cls.name, **method_options)
    saved_meta = checkpoint["selfsup"]["data_meta"] if checkpoint is not None else None
    examples, data_meta = cls.open_data(method_config, config.data, config.seed, saved_meta)
    examples = _limited(examples, config)
    _check_one_batch(len(examples), "training examples", config)
    method = cls.build(method_config, data_meta)
    skipped = getattr(examples, "skipped", None)  # audio files whose header showed them unusable
    return _Setup(method, {}, examples, collate=SequenceBatches(method.collate), noun="examples",
                  note=f" ({len(skipped)} unusable files skipped)" if skipped else "")


def _check_one_batch(n: int, noun: str, config: TrainConfig, note: str = "") -> None:
    """Every device needs a whole batch each step (the last partial one is dropped): refuse less data than that."""
    processes = config.devices * config.num_nodes
    if n >= config.batch_size * processes:
        return
    per_device = f" ({config.batch_size} per device x {processes} devices)" if processes > 1 else ""
    fits = max(2, n // (2 * processes))
    raise SelfsupError(f"{config.data} has {n} {noun}, fewer than one batch of {config.batch_size * processes}"
                       f"{per_device}{note}; pass --batch-size {fits} or less{' or fewer --devices' * (processes > 1)}"
                       ", or more data")


class SequenceBatches:
    """collate_fn for a text or audio method: KeyedSamples items (*example, index) -> (the method's batch,
    None, indices), the (views, labels, indices) triple SelfsupModule takes."""

    def __init__(self, collate: Any):
        self.collate = collate

    def __call__(self, items: list[tuple]) -> tuple[Any, None, torch.Tensor]:
        return self.collate([item[:-1] for item in items]), None, torch.tensor([item[-1] for item in items])


class TrainingInterrupted(SelfsupError):
    """The run was asked to stop (SIGTERM) and saved a checkpoint first."""

    exit_code = 143  # 128 + SIGTERM, what schedulers expect of a process they stopped


# What a resumed run may change: how long it goes on and how it saves and shows itself. Anything else (the batch,
# devices, data, the method's options ...) changes the arithmetic the checkpoint's state was made with.
RESUMABLE_CHANGES = ("max_steps", "epochs", "checkpoint_every", "keep_last", "num_workers", "on_nan_loss",
                     "monitor_every", "probe_every", "probe_data")


def _check_resumable(options: dict[str, Any], saved: dict[str, Any]) -> None:
    changed = sorted(k for k, v in options.items() if k not in RESUMABLE_CHANGES and saved.get(k, v) != v)
    if changed:
        key = changed[0]
        raise SelfsupError(f"cannot resume with {key} {options[key]!r}: the run was made with {saved[key]!r}, and the "
                           f"checkpoint's state (learning rate, data position) depends on it; a resume may change only "
                           f"{', '.join(RESUMABLE_CHANGES)} (start a new run with --out to change {key})")


def _run_dir(method_name: str, out: str | None, resume: bool) -> Path:
    out = out or os.environ.get(RUN_DIR_ENV)
    if out:
        return Path(out)
    if int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", 1))) > 1:  # torchrun, srun
        raise SelfsupError("this process is one of several started by a launcher: pass --out RUN_FOLDER "
                           "so that they all write to the same run folder")
    if not resume:
        return Path("runs") / f"{method_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = sorted(Path("runs").glob(f"{method_name}-*/checkpoints/last.ckpt"), key=os.path.getmtime)
    if not runs:
        raise SelfsupError(f"--resume found no {method_name} run under ./runs; pass --out RUN_FOLDER")
    return runs[-1].parent.parent


def _resume_point(folder: Path, method_name: str) -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint of the run (saying which newer ones were unreadable)."""
    if not (folder / LAST).exists() and not step_checkpoints(folder):
        raise SelfsupError(f"cannot resume: '{folder / LAST}' does not exist; start the run without --resume")
    path, checkpoint, unreadable = latest_good_checkpoint(folder)
    for reason in unreadable:
        print(f"selfsup: warning: {reason}; resuming from the previous checkpoint '{path}'", file=sys.stderr)
    meta = checkpoint["selfsup"]
    if meta["method"] != method_name:
        raise SelfsupError(f"cannot resume: '{path}' was written by method '{meta['method']}', not "
                           f"'{method_name}'; run `selfsup train {meta['method']} --resume` or pick another --out")
    return path, checkpoint


def _limited(images: ImageSet | ShardSet, config: TrainConfig) -> Dataset:
    """A seeded random subset of limit_samples images, or all of them."""
    if not config.limit_samples:
        return images
    if isinstance(images, ShardSet):
        raise SelfsupError("limit_samples picks images from a folder or a built-in set, not from tar shards: "
                           "drop it, or pass fewer shards")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed))
    chosen = order[: config.limit_samples].tolist()
    return images.subset(chosen) if isinstance(images, FolderImageSet) else Subset(images, chosen)


def _usable_images(images: Dataset, config: TrainConfig, run_dir: Path) -> tuple[Dataset, str]:
    """An image folder without the files whose header shows they cannot be used (listed in
    RUN/bad_images.txt), wrapped to skip files that fail later while decoding; (set, note for the summary).
    With on_bad_image=error the first unusable file is a BadImageError instead."""
    if not isinstance(images, FolderImageSet):
        return images, ""
    good, bad = cached_scan(images.root, images.paths)  # headers already read by an earlier run are not read again
    if bad and config.on_bad_image == "error":
        path, reason = bad[0]
        raise BadImageError(f"{len(bad)} of {len(images)} image files cannot be used, e.g. '{path}': {reason}; "
                            "fix or remove them, or pass --on-bad-image skip", path, reason)
    log_file = inside(run_dir, BAD_IMAGES)
    log_file.write_text("".join(f"{path}\t{reason}\n" for path, reason in bad))
    keep = set(good)
    usable = images.subset([i for i, p in enumerate(images.paths) if p in keep]) if bad else images
    if config.on_bad_image == "error":
        return usable, ""
    note = f" ({len(bad)} unusable files skipped, listed in {log_file})" if bad else ""
    return SkipBadImages(usable, log_file), note


def _late_bad_images(run_dir: Path) -> str:
    """'; N images skipped (see FILE)' when any were, for the closing summary."""
    log_file = run_dir / BAD_IMAGES
    if not log_file.is_file():
        return ""
    paths = {line.partition("\t")[0] for line in log_file.read_text().splitlines() if line}
    return f"; {len(paths)} image files skipped, listed in {log_file}" if paths else ""


def _keyed_samples(images: Dataset, views: Any, config: TrainConfig,
                   run_dir: Path) -> tuple[Dataset, EpochSampler | None]:
    """What the loader reads: a ShardStream of tar shards (it orders itself), or KeyedSamples of other
    images with the EpochSampler that orders them. views None: the loader stacks uint8 images (batched)."""
    if isinstance(images, ShardSet):
        return ShardStream(images, views, config.seed, config.batch_size, inside(run_dir, BAD_IMAGES),
                           skip_bad=config.on_bad_image == "skip"), None
    sampler = EpochSampler(len(images), config.batch_size, config.seed)
    # Batched: the loader only stacks uint8 images and the views are made on the device, per batch.
    return KeyedSamples(images if views is None else TransformedImages(images, views), config.seed), sampler


def train_loader(dataset: Dataset, config: TrainConfig, batched: bool = False,
                 sampler: EpochSampler | None = None, collate: Any = None) -> DataLoader:
    """Batches of `config.batch_size`, the last partial one dropped. With an EpochSampler (whose
    keys `dataset` must accept, as KeyedSamples does) the order is resumable; without, shuffled,
    unless `dataset` is an IterableDataset (a ShardStream), which orders itself."""
    workers = config.num_workers
    if workers is None:  # in-memory images need no worker to be stacked; decoding and views do
        workers = 0 if batched else min(8, (os.cpu_count() or 2) - 1)
    # Its own generator: making an iterator draws worker seeds from it, not from the global RNG,
    # whose stream the batched views continue after a resume.
    generator = torch.Generator().manual_seed(config.seed)
    # Persistent workers also keep a ShardStream's copies, which count its epochs, alive between epochs;
    # its length is exact however many workers share it (Lightning warns that it may not be).
    warnings.filterwarnings("ignore", ".*IterableDataset. has .__len__. defined.*")
    shuffle = sampler is None and not isinstance(dataset, IterableDataset)
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle, sampler=sampler,
                      drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available(), generator=generator, collate_fn=collate)


def _trainer(config: TrainConfig, run_dir: Path, folder: Path, progress: bool, first: list[L.Callback],
             then: list[L.Callback]) -> L.Trainer:
    """The run's Trainer; its callbacks: `first`, the step checkpoints, `then`."""
    epochs = config.epochs or (None if config.max_steps else DEFAULT_EPOCHS)
    # Our EpochSampler resumes mid-epoch from the restored step; Lightning cannot see that and warns.
    warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
    warnings.filterwarnings("ignore", ".*`training_step` returned `None`.*")  # on_nan_loss=skip, on purpose
    inside(run_dir, "logs")
    # torch's SyncBatchNorm runs on GPUs only; on CPU processes (gloo) selfsup's own does the same.
    global_bn = [GlobalBatchNormSync()] if config.sync_batchnorm and not on_gpu(config) else []
    return make_trainer(
        run_dir, epochs, config.max_steps, resolved_precision(config), config.accelerator, progress, tensorboard=True,
        devices=config.devices, num_nodes=config.num_nodes, sync_batchnorm=config.sync_batchnorm and on_gpu(config),
        callbacks=[*first, StepCheckpoints(folder, config.checkpoint_every, config.keep_last), *then],
        plugins=global_bn,
        # the sampler shards the data by rank itself (EpochSampler): Lightning must not replace it
        use_distributed_sampler=False)


def on_gpu(config: TrainConfig) -> bool:
    return config.accelerator == "gpu" or (config.accelerator == "auto" and torch.cuda.is_available())


def resolved_precision(config: TrainConfig) -> str:
    """precision=auto: bf16 autocast on GPUs that support it, fp16 with loss scaling on older ones,
    float32 on CPUs (whose bf16 matmuls are slower than float32 ones unless they have AMX)."""
    if config.precision != "auto":
        return config.precision
    if not on_gpu(config):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _channels_last(config: TrainConfig) -> bool:
    """channels_last=None: on GPUs, whose convolution kernels are fastest in NHWC."""
    return on_gpu(config) if config.channels_last is None else config.channels_last
