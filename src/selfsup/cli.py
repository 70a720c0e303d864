"""The `selfsup` command: argument parsing only; the work happens in train/, eval/ and checkpoints."""

import argparse
import os
import re
import sys
from typing import Any

from selfsup.errors import SelfsupError
from selfsup.files import not_a_checkpoint
from selfsup.ranges import check_ranges

# train flags that map one-to-one onto config options (dest -> option name)
TRAIN_FLAGS = {
    "data": (str, "built-in set (fashion-mnist, mnist, digits, emoji, trees, paste-scenes, rs-mosaics, landsat, "
                    "doc-pages, doc-genres), NAME:DIR, an image folder (TIFF tiles of any band count, PDFs), or shards:PATTERN of "
                    "WebDataset tar files; text: bible, bible-all or a text folder; audio: tuxpaint, spoken-words or an "
                    "audio folder; video: clips, moving-objects or a video folder [the method's: fashion-mnist, "
                    "bible, tuxpaint, clips]"),
    "backbone": (str, "timm model name, or torchvision:NAME [the method's default]"),
    "epochs": (int, "passes over the data [100 unless --max-steps]"),
    "max_steps": (int, "stop after this many optimiser steps"),
    "batch_size": (int, "examples per device and step [256; wav2vec2: 16]"),
    "image_size": (int, "input side in pixels [the built-in set's own; a folder: its images' median shorter side "
                        "rounded to a multiple of 8 within 16-224; tar shards: 224]"),
    "devices": (int, "number of devices (GPUs, or CPU processes) [1]"),
    "num_nodes": (int, "number of machines [1]"),
    "accelerator": (str, "auto, cpu or gpu [auto]"),
    "num_workers": (int, "data loading processes [0 for batched views and text, else min(8, cores - 1)]"),
    "precision": (str, "32-true, bf16-mixed or 16-mixed [auto: bf16-mixed on GPUs that have it, 16-mixed on "
                       "older GPUs, 32-true on CPUs]"),
    "sync_batchnorm": (bool, "BatchNorm statistics over the batch of all devices, as SimCLR's global BN [off]"),
    "channels_last": (bool, "channels-last memory layout for convolutions [on for GPUs]"),
    "compile": (bool, "torch.compile the backbone; the first steps take longer [off]"),
    "recipe": (str, "auto (from the device, image size and number of images; printed and saved), cpu, gpu, or "
                    "paper (the method's paper defaults) [auto; paper with --config]"),
    "seed": (int, "random seed [0]"),
    "limit_samples": (int, "train on a seeded random subset of this many images"),
    "bands": (str, "TIFF tiles: the bands to keep, 1-based, in order, e.g. 4,3,2 [all]"),
    "checkpoint_every": (int, "steps between checkpoints (also written every epoch and on SIGTERM) [100]"),
    "keep_last": (int, "step checkpoints kept on disk; older ones are deleted [3]"),
    "on_bad_image": (str, "skip (and list in RUN/bad_images.txt) or error, for image files that cannot be decoded [skip]"),
    "on_nan_loss": (str, "stop, or skip the step's update, when the loss is NaN or inf [stop]"),
    "probe_every": (int, "steps between online kNN probes (2,000 train / 1,000 test examples, k=20), logged as "
                         "probe/knn_top1, and at the last step; 0: off [every tenth of the run, at least 100 steps "
                         "apart, when the data is a labelled built-in set or --probe-data is given]"),
    "probe_data": (str, "labelled images for the online probe: DIR/<class>/..., DIR/train|test/<class>/... or a "
                        "built-in set [the training data when it is a labelled built-in set]"),
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        check_ranges(vars(args))  # every numeric flag of every command, before anything is read or built
        _check_paths(args)  # before torch and the libraries are imported, which takes seconds
        return args.run(args) or 0
    except SelfsupError as e:
        print(f"selfsup: error: {_one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        print("selfsup: interrupted; continue a training run with --resume", file=sys.stderr)
        return 130


BASELINES = ("random", "pixels", "tfidf", "mfcc")


def _check_paths(args: argparse.Namespace) -> None:
    """A method name that no method file declares, a --data path or a --checkpoint file that does not exist:
    refused at once (the data and checkpoint readers say the same later, after the heavy imports)."""
    from selfsup.methods import catalog

    method = getattr(args, "method", None)
    if method is not None and method not in catalog():
        from selfsup.methods import method_class  # its message suggests the close names; tests may register more

        method_class(method)
    for flag in ("data", "eval_data", "probe_data"):
        spec = getattr(args, flag, None)
        named = spec is not None and re.match(r"^[A-Za-z][\w-]+:", spec) is not None  # NAME:DIR, shards:PATTERN
        if spec and not named and os.sep in spec and not os.path.exists(os.path.expanduser(spec)):
            modality = catalog()[method]["modality"] if method in catalog() else "image"
            what = {"text": "no text at", "audio": "no audio at", "video": "no videos at"}.get(modality, "no images at")
            raise SelfsupError(f"'{spec}' does not exist ({what} that path): pass a built-in name or an existing "
                               f"folder (see `selfsup {args.command} --help`)")
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint and checkpoint not in BASELINES and not os.path.exists(checkpoint):
        raise SelfsupError(f"checkpoint '{checkpoint}' does not exist; pass a .ckpt file from a run folder "
                           "(RUN/checkpoints/last.ckpt), or 'random' for a random-init encoder")
    if checkpoint and os.path.isfile(checkpoint) and (problem := not_a_checkpoint(checkpoint)):
        raise SelfsupError(problem)


def _one_line(error: Exception) -> str:
    # An error raised in a DataLoader worker comes back wrapped with the worker's traceback;
    # its last line is the original message.
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].partition(": ")[2] or text.splitlines()[-1]
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfsup", description="Self-supervised pretraining, evaluation and export.")
    commands = parser.add_subparsers(dest="command", required=True)

    methods = commands.add_parser("methods", help="list the registered methods, or one method's options")
    methods.add_argument("name", nargs="?", help="a method: its paper, deviations and every option --set takes, "
                                                 "with its default")
    methods.set_defaults(run=_methods)

    train = commands.add_parser("train", help="pretrain an encoder without labels")
    train.add_argument("method", help="method name (see `selfsup methods`)")
    for dest, (kind, text) in TRAIN_FLAGS.items():
        flag = "--" + dest.replace("_", "-")
        if kind is bool:  # --compile / --no-compile
            train.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=text)
        else:
            train.add_argument(flag, dest=dest, type=kind, help=text)
    train.add_argument("--small-stem", dest="small_stem", action="store_true", default=None,
                       help="3x3 stride-1 ResNet stem without max-pool, for 28-64 px images")
    train.add_argument("--out", help="run folder [runs/METHOD-DATE-TIME]")
    train.add_argument("--config", help="YAML file of options (flags and --set override it)")
    train.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                       help="any method or run option, e.g. --set temperature=0.2 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out (or the latest one)")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="evaluate an encoder on a labeled set (knn, linear, finetune, mlm, "
                                                "segment, detect, propagate, change)")
    protocols = evaluate.add_subparsers(dest="protocol", required=True,
                                        metavar="{knn,linear,finetune,mlm,segment,detect,propagate,change}")
    common = _eval_common()
    for protocol, text in (("knn", "weighted kNN on frozen features"), ("linear", "linear probe on frozen features")):
        frozen = protocols.add_parser(protocol, parents=[common], help=text)
        frozen.add_argument("--k", type=int, help="neighbours for knn [200 for images, 20 for text and audio]")
        frozen.add_argument("--temperature", type=float, default=0.07, help="knn vote weight exp(s/T) [0.07]")
        frozen.add_argument("--batch-size", type=int, help="[256 for images, 64 otherwise]")
        frozen.add_argument("--out", help="result JSON [RUN/eval/PROTOCOL-DATA.json]")
        frozen.set_defaults(run=_eval)
    mlm = protocols.add_parser("mlm", parents=[common], help="masked-token accuracy of a text model on held-out text")
    mlm.add_argument("--out", help="result JSON [RUN/eval/mlm-DATA.json]")
    mlm.set_defaults(run=_eval, k=None, temperature=0.07, batch_size=None)

    finetune = protocols.add_parser("finetune", parents=[common],
                                    help="fine-tune end to end with a linear classifier on a fraction of the labels")
    finetune.add_argument("--label-fraction", type=float,
                          help="class-balanced, seeded share of the train labels used, e.g. 0.01, 0.1, 1.0 "
                               "[0.1 for images, 1.0 otherwise]")
    _add_schedule_flags(finetune, "images: 60 with 1%% of the labels or fewer, else 30; text, audio: 300 steps",
                        "images: 0.005*sqrt(batch); text, audio: 1e-4")
    finetune.add_argument("--optimizer", choices=["lars", "sgd", "adamw"], help="[lars for images, else adamw]")
    finetune.add_argument("--weight-decay", type=float, help="[0 for images, else 0.01]")
    finetune.add_argument("--out", help="folder for classifier.ckpt, result.json and logs, or FILE.json for the "
                                        "result (the rest goes to the folder FILE) [RUN/finetune/DATA-PCT]")
    finetune.set_defaults(run=_finetune)

    segment = protocols.add_parser("segment", parents=[_eval_common()], conflict_handler="resolve",
                                   help="semantic segmentation on dense data: mIoU of a 1x1-conv probe on frozen "
                                        "feature maps, or of fine-tuning with an FCN head (--finetune)")
    segment.add_argument("--checkpoint", required=True,
                         help="a .ckpt file of an image method, 'random' (untrained --backbone) or 'pixels' (the "
                              "normalised pixels as the feature map; probe only)")
    for flag in ("--pooling", "--limit", "--test-fraction"):  # refused by _segment: hidden from its help
        segment.add_argument(flag, help=argparse.SUPPRESS)
    segment.add_argument("--data", help="dense data: paste-scenes, paste-scenes-multi, rs-mosaics, trees (crown "
                                        "ellipses from the real boxes), or a folder with DIR/images/ (images or "
                                        "multi-band TIFF tiles) and DIR/masks/ [paste-scenes]")
    segment.add_argument("--finetune", action="store_true",
                         help="fine-tune the encoder with an FCN head instead of probing it frozen")
    segment.add_argument("--label-fraction", type=float,
                         help="with --finetune: seeded share of the train images used, e.g. 0.01, 0.1, 1.0 [0.1]")
    segment.add_argument("--epochs", type=int, help="frozen probe: passes over the train features [20]")
    segment.add_argument("--max-steps", type=int, help="with --finetune: optimiser steps [300]")
    segment.add_argument("--lr", type=float, help="probe: Adam 1e-2; --finetune: AdamW 1e-3 for the head, a tenth "
                                                  "of it for the encoder")
    segment.add_argument("--batch-size", type=int, help="images per step [16 for the probe, 8 for --finetune]")
    segment.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    segment.add_argument("--out", help="result JSON [RUN/eval/segment-DATA.json, "
                                       "RUN/eval/segment-finetune-PCT-DATA.json]")
    segment.set_defaults(run=_segment)

    change = protocols.add_parser("change", parents=[_eval_common()], conflict_handler="resolve",
                                  help="change detection on image pairs: F1 and IoU of the change class of a "
                                       "siamese network (|f_A - f_B| -> light decoder) on the encoder")
    change.add_argument("--checkpoint", required=True,
                        help="a .ckpt file of an image method, 'random' (untrained --backbone) or 'pixels' (|A - B| "
                             "of the normalised pixels; frozen only)")
    for flag in ("--pooling", "--limit", "--test-fraction"):  # refused by _change: hidden from its help
        change.add_argument(flag, help=argparse.SUPPRESS)
    change.add_argument("--data", help="change pairs: rs-change, or a folder laid out as LEVIR-CD, DIR/A/x.png, "
                                       "DIR/B/x.png, DIR/label/x.png (or DIR/train/... and DIR/test/...) [rs-change]")
    change.add_argument("--finetune", action="store_true", help="train the encoder with the decoder (default: frozen)")
    change.add_argument("--max-steps", type=int, help="decoder (or, with --finetune, network) optimiser steps [300]")
    change.add_argument("--lr", type=float, help="frozen: Adam 1e-3; --finetune: AdamW 1e-3 for the decoder, a tenth "
                                                 "of it for the encoder")
    change.add_argument("--batch-size", type=int, help="pairs per step [16 frozen, 8 with --finetune]")
    change.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    change.add_argument("--out", help="result JSON, with the figure beside it as .png [RUN/eval/change-DATA.json]")
    change.set_defaults(run=_change)

    detect = protocols.add_parser("detect", parents=[_eval_common()], conflict_handler="resolve",
                                  help="object detection on data with boxes: AP50 and AP of a torchvision detector "
                                       "(FCOS, RetinaNet, Faster R-CNN) whose backbone is the encoder, fine-tuned")
    detect.add_argument("--checkpoint", required=True,
                        help="a .ckpt file of an image method with a ResNet backbone, or 'random' (untrained "
                             "--backbone)")
    for flag in ("--pooling", "--limit", "--test-fraction"):  # refused by _detect: hidden from its help
        detect.add_argument(flag, help=argparse.SUPPRESS)
    detect.add_argument("--data", help="dense data with boxes: trees, paste-scenes-multi, or a folder with "
                                       "DIR/images/ and a COCO JSON or Pascal VOC XML box file [trees]")
    detect.add_argument("--detector", choices=["fcos", "retinanet", "fasterrcnn", "detr"], default="fcos",
                        help="[fcos]; detr: DETR, the whole DETR of an updetr checkpoint")
    detect.add_argument("--epochs", type=int, help="passes over the train images instead of --max-steps; 0: the "
                                                   "untrained detector")
    detect.add_argument("--max-steps", type=int, help="optimiser steps [100]")
    detect.add_argument("--lr", type=float, help="SGD learning rate [0.005; detr: AdamW 1e-4]")
    detect.add_argument("--batch-size", type=int, help="images per step [4]")
    detect.add_argument("--freeze-backbone", action="store_true", help="train the FPN and heads only")
    detect.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    detect.add_argument("--out", help="result JSON [RUN/eval/detect-DETECTOR-DATA.json]")
    detect.set_defaults(run=_detect)

    propagate = protocols.add_parser("propagate", parents=[_eval_common()], conflict_handler="resolve",
                                     help="video label propagation: J of the first frame's mask carried through "
                                          "feature affinity to the later frames (no training)")
    propagate.add_argument("--checkpoint", required=True,
                           help="a .ckpt file of a video method, or of an image method (applied frame by frame), "
                                "'random' (untrained --backbone) or 'pixels' (colour affinity)")
    for flag in ("--pooling", "--limit", "--test-fraction"):  # refused by _propagate: hidden from its help
        propagate.add_argument(flag, help=argparse.SUPPRESS)
    propagate.add_argument("--data", help="clips with per-frame masks: moving-objects [moving-objects]")
    propagate.add_argument("--clips", type=int, help="the first N test clips [all 100]")
    propagate.add_argument("--topk", type=int, default=5, help="source locations each location averages [5]")
    propagate.add_argument("--temperature", type=float, default=0.07, help="affinity softmax temperature [0.07]")
    propagate.add_argument("--context", type=int, default=3, help="previous frames used besides the first [3]")
    propagate.add_argument("--radius", type=_radius, default=3,
                           help="feature cells a source may lie from the target (square window), or 'none' [3]")
    propagate.add_argument("--grid", type=_radius, default=16,
                           help="cells a side the feature maps are upsampled to when coarser, or 'none' [16]")
    propagate.add_argument("--stage", type=int, help="propagate the map after this stage (1-4) of the encoder's "
                                                      "ResNet, image or video [the method's dense features: the "
                                                      "last map]")
    propagate.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    propagate.add_argument("--out", help="result JSON [RUN/eval/propagate-DATA.json]")
    propagate.set_defaults(run=_propagate)

    distill = commands.add_parser("distill", help="train a student on a fine-tuned teacher's soft labels (no labels)")
    distill.add_argument("--teacher", required=True, help="classifier.ckpt written by `selfsup eval finetune`")
    distill.add_argument("--student-backbone", required=True, help="timm model name, or torchvision:NAME")
    distill.add_argument("--student-backbone-kwargs", type=_yaml_mapping, default={},
                         help="student constructor options as YAML, e.g. '{channels: [16, 32, 64, 128]}'")
    distill.add_argument("--student-small-stem", action="store_true", help="3x3 stride-1 ResNet stem for the student")
    distill.add_argument("--data", help="unlabeled images: built-in set, NAME:DIR or a folder "
                                        "[the teacher's train split, labels unused]")
    distill.add_argument("--eval-data", help="labeled set whose test split scores the student [the teacher's data]")
    distill.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of both sides [1.0]")
    _add_schedule_flags(distill, "400", "0.1*sqrt(batch)")
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--out", help="folder for the student's classifier.ckpt, result.json and logs "
                                       "[TEACHER_FOLDER/distill-STUDENT]")
    distill.set_defaults(run=_distill)

    plot = commands.add_parser("plot", help="figures: reconstructions of a masked image model, t-SNE of embeddings, "
                                            "masks, a run's training curves")
    figures = plot.add_subparsers(dest="figure", required=True, metavar="{reconstructions,tsne,masks,curves}")
    recon = figures.add_parser("reconstructions", help="original / corrupted / reconstructed test images (sit, gmml, "
                                                       "mae, simmim, cae, spark)")
    recon.add_argument("--checkpoint", required=True)
    recon.add_argument("--data", help="labeled set whose test images are shown [the checkpoint's training data]")
    recon.add_argument("--n", type=int, default=8, help="images [8]")
    recon.add_argument("--seed", type=int, default=0, help="picks the images and the masks [0]")
    recon.add_argument("--out", required=True, help="FILE.png")
    recon.set_defaults(run=_plot)
    tsne = figures.add_parser("tsne", parents=[_eval_common()], help="t-SNE of test-set embeddings by label")
    tsne.add_argument("--n", type=int, default=2000, help="test examples [2000]")
    tsne.add_argument("--out", required=True, help="FILE.png")
    tsne.set_defaults(run=_plot)
    masks = figures.add_parser("masks", help="training views with the masks an object-level method's loss uses "
                                             "(detcon-s, detcon-b, r2o)")
    masks.add_argument("--checkpoint", required=True)
    masks.add_argument("--data", help="images whose views are shown [the checkpoint's training data]")
    masks.add_argument("--n", type=int, default=6, help="images [6]")
    masks.add_argument("--seed", type=int, default=0, help="picks the images and the views [0]")
    masks.add_argument("--out", required=True, help="FILE.png")
    masks.set_defaults(run=_plot)
    curves = figures.add_parser("curves", help="a run's loss, learning rate, online probe top-1 and collapse figures "
                                               "over its steps, as one figure")
    curves.add_argument("--run", dest="run_dir", metavar="DIR", required=True, help="the run folder `selfsup train` wrote (all its logs/csv "
                                                     "versions, merged by step)")
    curves.add_argument("--out", help="FILE.png (or .pdf, .svg) [RUN/curves.png]")
    curves.set_defaults(run=_plot)

    embed = commands.add_parser("embed", help="write the frozen encoder's embedding of every input, with its path "
                                              "or index and its label, as .parquet, .npy or .csv")
    embed.add_argument("--checkpoint", required=True, help="a .ckpt file written by `selfsup train`")
    embed.add_argument("--data", help="an image folder (every image file under it), a built-in set, NAME:DIR or a "
                                      "labeled folder; text: bible-genres; audio: spoken-words, tuxpaint-languages "
                                      "or a class folder [fashion-mnist; bible-genres; spoken-words]")
    embed.add_argument("--split", choices=["train", "test"],
                       help="the labeled split as `selfsup eval` reads it [train; an image folder: all its images]")
    embed.add_argument("--batch-size", type=int, help="[256 for images, 64 otherwise]")
    embed.add_argument("--out", required=True, help="FILE.parquet, FILE.npy (+ FILE.paths.txt) or FILE.csv")
    embed.set_defaults(run=_embed)

    discover = commands.add_parser("discover", help="find the main object of each image from a ViT's last-layer "
                                                    "keys (TokenCut): boxes, masks, a figure and CorLoc")
    discover.add_argument("--checkpoint", required=True,
                          help="a .ckpt file of an image method with a timm ViT backbone, or 'random' (untrained "
                               "--backbone)")
    discover.add_argument("--data", required=True, help="paste-scenes, paste-scenes-multi, trees, a dense folder "
                                                        "(DIR/images/ with masks or boxes), or any image folder")
    discover.add_argument("--out", required=True, help="folder for boxes.json, masks/, overlay.png, metrics.json")
    discover.add_argument("--split", choices=["train", "test", "all"], help="split of dense data [test]")
    discover.add_argument("--limit", type=int, help="the first N images only [all]")
    discover.add_argument("--random-init", action="store_true", help="the checkpoint's ViT with fresh weights")
    discover.add_argument("--backbone", help="for --checkpoint random: a timm ViT, e.g. timm:vit_tiny_patch16_224")
    discover.add_argument("--backbone-kwargs", type=_yaml_mapping,
                          help="for --checkpoint random: constructor options as YAML, e.g. '{img_size: 64, "
                               "patch_size: 8}'")
    discover.add_argument("--image-size", type=int, help="input side [the checkpoint's; random: the ViT's img_size]")
    discover.add_argument("--tau", type=float, default=0.2, help="graph threshold on the keys' cosine [0.2]")
    discover.add_argument("--eps", type=float, default=1e-5, help="weight of the pairs below --tau [1e-5]")
    discover.add_argument("--batch-size", type=int, default=32, help="images per forward pass [32]")
    discover.add_argument("--figure-images", type=int, default=16, help="images drawn in overlay.png [16]")
    discover.add_argument("--seed", type=int, default=0, help="seeds a random-init ViT [0]")
    discover.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    discover.set_defaults(run=_discover)

    export = commands.add_parser("export", help="write the encoder: an image backbone as safetensors or ONNX + a JSON "
                                                "sidecar, a text or audio model as a Hugging Face folder")
    export.add_argument("--checkpoint", required=True,
                        help="a .ckpt of `selfsup train` (RUN/checkpoints/last.ckpt); what is written is the encoder "
                             "(the backbone, or the teacher where the method evaluates with it), without what only "
                             "pretraining used: heads, decoders, necks (glcnet's DeepLabv3+ decoder, sadlcd's FPN, "
                             "rs-multitask's U-Net decoder)")
    export.add_argument("--out", required=True, help="FILE.safetensors or FILE.onnx (images), FOLDER (text, audio)")
    export.add_argument("--format", choices=["safetensors", "onnx"],
                        help="onnx: an image encoder as ONNX with a dynamic batch axis [from --out: .onnx is onnx; "
                             "otherwise safetensors, or a Hugging Face folder for text and audio]")
    export.set_defaults(run=_export)

    tokenizer = commands.add_parser("train-tokenizer", help="train the document page tokenizer (a VQ-VAE, one code "
                                                            "per patch: DiT's targets) and plot its reconstructions")
    tokenizer.add_argument("--data", default="doc-pages",
                           help="doc-pages, doc-genres, or a folder of PDFs and page images [doc-pages]")
    tokenizer.add_argument("--out", required=True, help="folder for tokenizer.ckpt, reconstructions.png, tokenizer.json")
    tokenizer.add_argument("--max-steps", type=int, help="Adam steps [2000]")
    tokenizer.add_argument("--batch-size", type=int, default=16, help="pages per step [16]")
    tokenizer.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate [1e-3]")
    tokenizer.add_argument("--codes", type=int, help="codebook size K [512]")
    tokenizer.add_argument("--patch", type=int, help="pixels per code side, a power of 2 (ViT patch) [16]")
    tokenizer.add_argument("--width", type=int, help="channels of the deepest convolutions [64]")
    tokenizer.add_argument("--encoder", choices=("patch", "conv"),
                           help="patch: each code from its own patch's pixels; conv: the whole page through the "
                                "convolutions [patch]")
    tokenizer.add_argument("--checkpoint-every", type=int, default=200,
                           help="steps between saves of OUT/tokenizer_state.ckpt, which a rerun with the same --out "
                                "continues from exactly (also saved at the end and on Ctrl-C/SIGTERM) [200]")
    tokenizer.add_argument("--seed", type=int, default=0)
    tokenizer.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    tokenizer.set_defaults(run=_train_tokenizer)
    return parser


def _eval_common() -> argparse.ArgumentParser:
    """Flags every `eval` protocol takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", required=True,
                        help="a .ckpt file, 'random' (untrained --backbone) or 'pixels' (raw pixels; knn/linear only); "
                             "'tfidf' (text) or 'mfcc' (audio): the baseline of those modalities")
    common.add_argument("--data", help="built-in set, NAME:DIR, or a labeled folder (DIR/train|test/CLASS or DIR/CLASS) "
                                       "[fashion-mnist; bible-genres for text; spoken-words for audio, or "
                                       "tuxpaint-languages]")
    common.add_argument("--random-init", action="store_true",
                        help="the checkpoint's network (and tokenizer) with fresh weights: its random twin")
    common.add_argument("--pooling", choices=["mean", "cls"],
                        help="text features: mean of the tokens' final states, or the [CLS] state [mean]")
    common.add_argument("--limit", type=_pair_of_ints,
                        help="seeded N_TRAIN,N_TEST examples of the split: verses of the text task, or images (the "
                             "online probe's sample is 2000,1000 with --seed 0) [all]")
    common.add_argument("--backbone", help="image architecture for --checkpoint random [resnet18]")
    common.add_argument("--small-stem", action="store_true", help="for --checkpoint random")
    common.add_argument("--backbone-kwargs", type=_yaml_mapping,
                        help="for --checkpoint random: constructor options as YAML, e.g. '{channels: [32, 64, 128, 256]}'")
    common.add_argument("--image-size", type=int, help="image input side [the checkpoint's; random and pixels: the "
                                                       "built-in set's own, or the side `selfsup train` picks for "
                                                       "the folder]")
    common.add_argument("--test-fraction", type=float,
                        help="image or audio folder without train/test: the share held out [0.2]")
    common.add_argument("--seed", type=int, default=0)
    return common


def _add_schedule_flags(parser: argparse.ArgumentParser, epochs: str, lr: str) -> None:
    """Flags of the commands that train a classifier (finetune, distill)."""
    parser.add_argument("--epochs", type=int, help=f"passes over the images [{epochs}]")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--batch-size", type=int, help="[256 for images, 32 otherwise]")
    parser.add_argument("--lr", type=float, help=f"learning rate for the batch [{lr}]")
    parser.add_argument("--num-workers", type=int, help="data loading processes")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _pair_of_ints(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected N_TRAIN,N_TEST such as 5000,2000, got {text!r}")
    return int(parts[0]), int(parts[1])


def _yaml_mapping(text: str) -> dict:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{channels: [32, 64]}}', got {text!r}")
    return value


def _methods(args: argparse.Namespace) -> None:
    from selfsup.methods import catalog, method_class  # read from the method files: nothing heavy is imported
    from selfsup.methods.registry import config_options

    every = catalog()
    if args.name is not None and args.name not in every:
        method_class(args.name)  # raises, naming the methods that come close
    for name, info in sorted(every.items()):
        if args.name not in (None, name):
            continue
        default = f"default backbone {info['backbone']}" if info["backbone"] else f"default data {info['data']}"
        print(f"{name:12s} {info['paper']}; {info['modality']}, {default}")
        if info["deviations"]:
            print(f"{'':12s} differs from the paper: {info['deviations']}")
    if args.name is not None:
        options = config_options(args.name)
        width = max(len(f"{key} = {value}") for key, value, _ in options)
        print(f"options (selfsup train {args.name} --set KEY=VALUE; the run's own flags: selfsup train --help):")
        for key, value, comment in options:
            print(f"  {f'{key} = {value}':{width}s}  {comment}".rstrip())


def _train(args: argparse.Namespace) -> None:
    from selfsup.train.config import parse_assignments, read_yaml
    from selfsup.train.run import train

    options: dict[str, Any] = read_yaml(args.config) if args.config else {}
    if args.config:  # a config file says what it wants; a recipe fills in only when asked
        options.setdefault("recipe", "paper")
    for dest in [*TRAIN_FLAGS, "small_stem"]:
        if getattr(args, dest) is not None:
            options[dest] = getattr(args, dest)
    options.update(parse_assignments(args.assignments))
    train(args.method, options, out=args.out, resume=args.resume, progress=args.progress)


def _image_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"backbone": args.backbone, "small_stem": args.small_stem, "backbone_kwargs": args.backbone_kwargs,
            "image_size": args.image_size}


def _eval(args: argparse.Namespace) -> None:
    from selfsup.eval import evaluate

    result = evaluate(args.protocol, args.checkpoint, data=args.data, k=args.k, temperature=args.temperature,
                      random_init=args.random_init, pooling=args.pooling, limit=args.limit,
                      test_fraction=args.test_fraction, seed=args.seed, out=args.out, batch_size=args.batch_size,
                      **_image_options(args))
    knn = f" (k={result['k']}, T={result['temperature']})" if "k" in result else ""
    size = f" at {result['image_size']} px" if result.get("image_size") else ""
    print(f"{args.protocol} top-1 {result['top1']:.4f}{knn} | {result['encoder']}{size} | {result['data']} "
          f"{result['n_train']} train / {result['n_test']} test | {result['seconds']}s | {result['json']}")


def _finetune(args: argparse.Namespace) -> None:
    from selfsup.eval.finetune import finetune

    if args.random_init or args.pooling:
        raise SelfsupError(f"--{'random-init' if args.random_init else 'pooling'} applies to frozen evaluation "
                           "(knn, linear, tsne); fine-tune --checkpoint random for the random-init baseline")
    result = finetune(args.checkpoint, data=args.data, label_fraction=args.label_fraction, epochs=args.epochs,
                      max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, limit=args.limit, test_fraction=args.test_fraction,
                      seed=args.seed, out=args.out, num_workers=args.num_workers, progress=args.progress,
                      **_image_options(args))
    print(f"finetune top-1 {result['top1']:.4f} | {result['encoder']} | {result['data']} "
          f"{result['label_fraction']:.0%} labels ({result['n_labeled']} "
          f"{'images' if result['modality'] == 'image' else 'examples'}) / {result['n_test']} test | "
          f"{result['steps']} steps | {result['seconds']}s | {result['json']}")


def _segment(args: argparse.Namespace) -> None:
    from selfsup.eval.segment import evaluate_segment

    given = [flag for flag, value in (("pooling", args.pooling), ("limit", args.limit),
                                      ("test-fraction", args.test_fraction)) if value is not None]
    if given:
        raise SelfsupError(f"--{given[0]} does not apply to segment, which takes image encoders and dense data's "
                           "own train/test split; drop it")
    result = evaluate_segment(args.checkpoint, data=args.data, finetune=args.finetune,
                              label_fraction=args.label_fraction, epochs=args.epochs, max_steps=args.max_steps,
                              lr=args.lr, batch_size=args.batch_size, random_init=args.random_init, seed=args.seed,
                              out=args.out, progress=args.progress, **_image_options(args))
    how = (f"fine-tuned on {result['label_fraction']:.0%} ({result['n_labeled']} images), {result['steps']} steps"
           if args.finetune else f"frozen 1x1-conv probe, {result['epochs']} epochs")
    found = "n/a" if result["foreground_iou"] is None else f"{result['foreground_iou']:.4f}"
    objects = f", object-vs-background probe IoU {result['objectness_iou']:.4f}" if "objectness_iou" in result else ""
    counted = "background counted as a class" if result["background_counted"] else "every pixel has a class"
    print(f"segment mIoU {result['miou']:.4f} ({counted}), foreground IoU {found}{objects} | "
          f"{how} | {result['encoder']} | "
          f"{result['data']} [{result['tag']} labels] {result['n_train']} train / {result['n_test']} test | "
          f"{result['seconds']}s | {result['json']}")


def _change(args: argparse.Namespace) -> None:
    from selfsup.eval.change import evaluate_change

    given = [flag for flag, value in (("pooling", args.pooling), ("limit", args.limit),
                                      ("test-fraction", args.test_fraction)) if value is not None]
    if given:
        raise SelfsupError(f"--{given[0]} does not apply to change, which takes image encoders and the pairs' own "
                           "train/test split; drop it")
    r = evaluate_change(args.checkpoint, data=args.data, finetune=args.finetune, max_steps=args.max_steps, lr=args.lr,
                        batch_size=args.batch_size, random_init=args.random_init, seed=args.seed, out=args.out,
                        progress=args.progress, **_image_options(args))
    f1, iou = ("n/a" if r[k] is None else f"{r[k]:.4f}" for k in ("f1", "iou"))
    how = "fine-tuned" if args.finetune else "frozen encoder"
    print(f"change F1 {f1}, IoU {iou} (change class) | {how}, |f_A - f_B| decoder, {r['steps']} steps | "
          f"{r['encoder']} at {r['image_size']} px | {r['data']} [{r['labels']}] {r['n_train']} train / "
          f"{r['n_test']} test pairs | {r['seconds']}s | {r['json']} {r['figure']}")


def _detect(args: argparse.Namespace) -> None:
    from selfsup.eval.detect import evaluate_detect

    given = [flag for flag, value in (("pooling", args.pooling), ("limit", args.limit),
                                      ("test-fraction", args.test_fraction)) if value is not None]
    if given:
        raise SelfsupError(f"--{given[0]} does not apply to detect: dense data comes with its own train/test split")
    result = evaluate_detect(args.checkpoint, data=args.data, detector=args.detector, epochs=args.epochs,
                             max_steps=args.max_steps, lr=args.lr, batch_size=args.batch_size,
                             freeze_backbone=args.freeze_backbone, random_init=args.random_init, seed=args.seed,
                             out=args.out, progress=args.progress, **_image_options(args))
    print(f"{result['summary']} | {result['steps']} steps ({result['epochs']:g} epochs) | {result['seconds']}s | "
          f"{result['json']}")


def _radius(text: str) -> int | None:
    """A number of cells, or 'none' (no limit, or the native grid)."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of cells; pass e.g. 3, or none") from None


def _propagate(args: argparse.Namespace) -> None:
    from selfsup.eval.propagate import evaluate_propagate

    given = [flag for flag, value in (("pooling", args.pooling), ("limit", args.limit),
                                      ("test-fraction", args.test_fraction)) if value is not None]
    if given:
        raise SelfsupError(f"--{given[0]} does not apply to propagate, which reads the test clips of moving-objects "
                           "(use --clips N for fewer); drop it")
    result = evaluate_propagate(args.checkpoint, data=args.data, random_init=args.random_init, clips=args.clips,
                                topk=args.topk, temperature=args.temperature, context=args.context,
                                radius=args.radius, grid=args.grid, seed=args.seed, out=args.out,
                                stage=args.stage, progress=args.progress, **_image_options(args))
    (h, w), (gh, gw) = result["feature_grid"], result["propagation_grid"]
    print(f"propagate J {result['j']:.4f} (copy of the first mask {result['j_copy_first_mask']:.4f}, ground truth on "
          f"the {gh}x{gw} grid {result['j_oracle_at_grid']:.4f}) | {result['encoder']}, {h}x{w} map | {result['data']} "
          f"[{result['tag']} labels] {result['n_clips']} test clips of {result['frames']} frames | "
          f"{result['seconds']}s | {result['json']}")


def _distill(args: argparse.Namespace) -> None:
    from selfsup.eval.distill import distill

    result = distill(args.teacher, args.student_backbone, args.student_backbone_kwargs, args.student_small_stem,
                     data=args.data, eval_data=args.eval_data, temperature=args.temperature, epochs=args.epochs,
                     max_steps=args.max_steps, batch_size=args.batch_size or 256, lr=args.lr, seed=args.seed, out=args.out,
                     num_workers=args.num_workers, progress=args.progress)
    print(f"distill top-1 {result['top1']:.4f} (teacher {result['teacher_top1']:.4f}, agreement "
          f"{result['agreement']:.4f}) | student {result['student']} ({result['student_params_m']}M params, teacher "
          f"{result['teacher_params_m']}M) | {result['n_images']} images, {result['steps']} steps | "
          f"{result['seconds']}s | {result['json']}")


def _plot(args: argparse.Namespace) -> None:
    from selfsup.eval.plots import plot_curves, plot_masks, plot_reconstructions, plot_tsne

    if args.figure == "curves":
        path = plot_curves(args.run_dir, args.out)
    elif args.figure == "reconstructions":
        path = plot_reconstructions(args.checkpoint, args.out, data=args.data, n=args.n, seed=args.seed)
    elif args.figure == "masks":
        path = plot_masks(args.checkpoint, args.out, data=args.data, n=args.n, seed=args.seed)
    else:
        if args.limit:
            raise SelfsupError("--limit does not apply to tsne: --n sets how many test examples are drawn")
        path = plot_tsne(args.checkpoint, args.out, data=args.data, n=args.n, seed=args.seed,
                         test_fraction=args.test_fraction, random_init=args.random_init, pooling=args.pooling,
                         **_image_options(args))
    print(f"wrote {path}")


def _embed(args: argparse.Namespace) -> None:
    from selfsup.eval.embed import embed

    result = embed(args.checkpoint, args.out, data=args.data, split=args.split, batch_size=args.batch_size)
    labels = "with labels" if result["labelled"] else "unlabeled"
    print(f"embed {result['rows']} x {result['dim']} | {result['encoder']} | {result['data']} {labels} | "
          f"{' and '.join(result['files'])}")


def _discover(args: argparse.Namespace) -> None:
    from selfsup.eval.discover import discover

    result = discover(args.checkpoint, args.data, args.out, split=args.split, limit=args.limit,
                      random_init=args.random_init, backbone=args.backbone, backbone_kwargs=args.backbone_kwargs,
                      image_size=args.image_size, batch_size=args.batch_size, tau=args.tau, eps=args.eps,
                      figure_images=args.figure_images, seed=args.seed, progress=args.progress)
    scores = (f"CorLoc {result['corloc']:.4f} (centred box {result['corloc_centred_box']:.4f}, "
              f"{result['n_with_boxes']} images with boxes) | " if result.get("corloc") is not None else "")
    tag = f" [{result['tag']} labels]" if result["tag"] else ""
    print(f"discover {scores}{result['encoder']} | {result['split']}{tag} {result['n_images']} images | "
          f"{result['seconds']}s | {result['out']}")


def _train_tokenizer(args: argparse.Namespace) -> None:
    from selfsup.document import train_tokenizer

    r = train_tokenizer(args.data, args.out, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, progress=args.progress, codes=args.codes, patch=args.patch, width=args.width,
                        encoder=args.encoder, checkpoint_every=args.checkpoint_every)
    print(f"train-tokenizer recon MSE {r['recon']:.5f} (test pages {r['shown_recon_mse']:.5f}), {r['codes_used']}/"
          f"{r['codes']} codes used on all pages, perplexity of their frequencies {r['code_perplexity']:.1f}, "
          f"{r['blank_codes']} codes on blank patches, {r['grid']} codes per page | {r['data']} "
          f"{r['pages']} pages, {r['steps']} steps | {r['seconds']}s | {r['checkpoint']} {r['reconstructions']}")


def _export(args: argparse.Namespace) -> None:
    from selfsup.checkpoints import export_encoder

    sidecar = export_encoder(args.checkpoint, args.out, args.format)
    print(f"wrote {args.out} and {sidecar}")


if __name__ == "__main__":
    sys.exit(main())
