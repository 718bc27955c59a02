"""Benchmarks, one subcommand each.

  python scripts/benchmark.py pipeline --annotations=FILE --images=DIR --json=OUT
  python scripts/benchmark.py inference --json=OUT [--naive_tflite]
  python scripts/benchmark.py stages [--arch mrfeanet2] [--quantization fp32]
  python scripts/benchmark.py train [--archs mrfeanet2] [--transposed_conv auto native]
  python scripts/benchmark.py adam [--archs mrfeanet2]
  python scripts/benchmark.py deconv [--shapes 3x2x2048x1024@32 ...]
  python scripts/benchmark.py keras --backend=jax --json=OUT   (e.g. on a GPU, no TensorFlow)

Adding a benchmark: write ``def cmd_NAME(args)`` and ``def add_NAME(subparsers)`` (which
declares its flags and sets ``func=cmd_NAME``) and list ``add_NAME`` in ``SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_SAMPLE = os.path.join(REPO_ROOT, "..", "shared", "data", "coco_sample")
INPUT_SIZE, HEATMAP_SIZE = (256, 192), (64, 48)


# --- pipeline --------------------------------------------------------------------------------

def _coco_train_records(annotations, images):
    from mrpose_tf.data.coco import read_coco
    return read_coco(annotations, images, train=True, aspect_ratio=INPUT_SIZE[1] / INPUT_SIZE[0])


def _measure_tf(args, cores):
    """Samples/s of the tf.data training pipeline limited to ``cores`` threads."""
    import tensorflow as tf

    from mrpose_tf.data.pipeline import build_dataset

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    records, spec = _coco_train_records(args.annotations, args.images)
    augment = dict(scale_factor=0.3, rotation_factor=40.0, rotation_prob=0.6, flip=True,
                   flip_prob=0.5)
    ds = build_dataset(records, keypoints=spec, input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE,
                       sigma=2.0, train=True, batch_size=args.batch_size, augment=augment,
                       repeat=True, num_parallel_calls=cores, opencv_warp=args.opencv_warp,
                       decode_once_per_image=args.decode_once_per_image)
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    options.autotune.cpu_budget = cores
    it = iter(ds.with_options(options))
    for _ in range(args.warmup_batches):
        next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    return args.batches * args.batch_size / (time.perf_counter() - start)


def _measure_opencv(args):
    """Samples/s of a reference-style per-sample pipeline: cv2.imread + warpAffine + numpy targets."""
    import cv2
    import numpy as np

    from mrpose_tf.geometry import affine_points, flip_joints, get_affine_transform
    from mrpose_tf.preprocessing import preprocess

    cv2.setNumThreads(1)
    records, spec = _coco_train_records(args.annotations, args.images)
    rng = np.random.default_rng(0)
    heat_h, heat_w = HEATMAP_SIZE
    stride = INPUT_SIZE[1] / heat_w
    sigma, radius = 2.0, 6

    def targets(joints, vis):
        maps = np.zeros((spec.num_joints, heat_h, heat_w), np.float32)
        weights = vis.astype(np.float32).copy()
        size = 2 * radius + 1
        x = np.arange(size, dtype=np.float32)
        g = np.exp(-((x - radius) ** 2 + (x[:, None] - radius) ** 2) / (2 * sigma ** 2))
        for j, (px, py) in enumerate(joints):
            mx, my = int(px / stride + 0.5), int(py / stride + 0.5)
            ul, br = (int(mx - radius), int(my - radius)), (int(mx + radius + 1), int(my + radius + 1))
            if ul[0] >= heat_w or ul[1] >= heat_h or br[0] < 0 or br[1] < 0:
                weights[j] = 0
                continue
            if weights[j] > 0.5:
                gx, gy = (max(0, -ul[0]), min(br[0], heat_w) - ul[0]), (max(0, -ul[1]), min(br[1], heat_h) - ul[1])
                ix, iy = (max(0, ul[0]), min(br[0], heat_w)), (max(0, ul[1]), min(br[1], heat_h))
                maps[j, iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
        return maps, weights

    def sample(r):
        image = cv2.imread(r.image_path, cv2.IMREAD_COLOR)[..., ::-1]
        joints, vis, center = r.joints, r.visibility, r.center.copy()
        scale = r.scale * np.clip(rng.normal() * 0.3 + 1, 0.7, 1.3)
        rot = np.clip(rng.normal() * 40, -80, 80) if rng.random() <= 0.6 else 0.0
        if rng.random() <= 0.5:
            image = image[:, ::-1]
            joints, vis = flip_joints(joints, vis, image.shape[1], spec.flip_pairs)
            center[0] = image.shape[1] - 1 - center[0]
        m = get_affine_transform(center, scale, rot, INPUT_SIZE)
        crop = cv2.warpAffine(np.ascontiguousarray(image), m, (INPUT_SIZE[1], INPUT_SIZE[0]),
                              flags=cv2.INTER_LINEAR)
        return preprocess(crop), targets(affine_points(joints, m), vis)

    total = args.warmup_batches * args.batch_size
    for i in range(total):
        sample(records[i % len(records)])
    count = args.batches * args.batch_size
    start = time.perf_counter()
    for i in range(count):
        sample(records[i % len(records)])
    return count / (time.perf_counter() - start)


def _run_isolated(args, kind, cores):
    """Run one measurement in a fresh process (threads fixed before TF starts); samples/s."""
    command = [sys.executable, os.path.abspath(__file__), "pipeline", "--_worker", kind,
               "--_cores", str(cores)] + [f"--{k}={v}" for k, v in vars(args).items()
                                         if k in _PIPELINE_FLAGS]
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= cores:
        cpus = sorted(os.sched_getaffinity(0))[:cores]
        command = ["taskset", "-c", ",".join(map(str, cpus))] + command
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


_PIPELINE_FLAGS = ("annotations", "images", "batch_size", "batches", "warmup_batches",
                   "opencv_warp", "decode_once_per_image")


def cmd_pipeline(args):
    if args._worker:
        rate = _measure_tf(args, args._cores) if args._worker == "tf" else _measure_opencv(args)
        print(rate)
        return
    results = {str(n): _run_isolated(args, "tf", n) for n in args.cores}
    opencv = _run_isolated(args, "opencv", 1)
    print(f"training pipeline, {INPUT_SIZE[0]}x{INPUT_SIZE[1]} crops + "
          f"{HEATMAP_SIZE[0]}x{HEATMAP_SIZE[1]}x17 targets, {args.annotations}")
    print(f"{'pipeline':<36}{'cores':>6}{'samples/s':>12}")
    print(f"{'reference-style OpenCV per sample':<36}{1:>6}{opencv:>12.1f}")
    for n, rate in results.items():
        label = "mrpose_tf tf.data" + (" (cv2 warp)" if args.opencv_warp else " (TF warp)")
        print(f"{label:<36}{n:>6}{rate:>12.1f}   x{rate / opencv:.2f} vs OpenCV")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples_per_s": results, "opencv_reference_samples_per_s": {"1": opencv},
                       "opencv_warp": args.opencv_warp,
                       "decode_once_per_image": args.decode_once_per_image},
                      f, indent=2)


def add_pipeline(subparsers):
    p = subparsers.add_parser("pipeline", help="training input pipeline samples/s")
    p.add_argument("--annotations", default=os.path.join(COCO_SAMPLE, "test_coco.json"))
    p.add_argument("--images", default=COCO_SAMPLE)
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--warmup_batches", type=int, default=5)
    p.add_argument("--opencv_warp", type=lambda s: s.lower() in ("1", "true", "yes"),
                   default=True, help="crop with cv2.warpAffine (the training default)")
    p.add_argument("--decode_once_per_image", type=lambda s: s.lower() in ("1", "true", "yes"),
                   default=True, help="decode each image once for all its people "
                   "(the training default)")
    p.add_argument("--_worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--_cores", type=int, default=1, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_pipeline)


# --- train -----------------------------------------------------------------------------------

TRAIN_ARCHS = ("simple_baseline", "mrfeanet2")
AUTHORS_IMAGES_PER_S = {"simple_baseline": 4.3, "mrfeanet2": 2.2}  # PyTorch, batch 8, float32
# mrpose_tf.training.layers.TRANSPOSED_CONV_CHOICES, spelt out: importing it (and keras) while
# the flags are parsed would fix the Keras backend before the 'keras' subcommand chooses one.
TRANSPOSED_CONV_CHOICES = ("auto", "matmul", "native")


def _measure_train_steps(arch, precision, args):
    """{(form, adam): (images/s, last loss)} of the trainer's own step (Trainer.train_step) on
    random in-memory tensors, one trainer per transposed-conv form of ``args.transposed_conv``
    and Adam update of ``args.adam``.

    The variants' timed windows interleave (A B A B ...), so the drift of a shared host's
    speed, ~10% between runs here, hits every variant alike; images/s is the median over the
    windows.
    """
    import tempfile

    import keras

    from mrpose_tf.config import paper_config
    from mrpose_tf.training import Trainer, make_strategy
    from mrpose_tf.training.inputs import random_examples, tensor_dataset_fn

    size, heatmap = _train_sizes(args)
    config = paper_config("coco", arch, "resnet50", INPUT_SIZE)
    config.model.input_size, config.model.heatmap_size = size, heatmap
    config.model.backbone_weights = None
    config.train.batch_size = args.batch_size
    strategy = make_strategy("one_device")
    data = random_examples(args.batch_size, size, heatmap, 17)
    runs = {}
    with tempfile.TemporaryDirectory() as workdir:
        for form, adam in itertools.product(args.transposed_conv, args.adam):
            config.train.fused_adam = adam == "fused"
            config.train.transposed_conv = form
            trainer = Trainer(config, os.path.join(workdir, f"{form}_{adam}"), strategy,
                              steps_per_epoch=1000, precision=precision,
                              jit_compile=args.jit, log=lambda line: None)
            batches = iter(trainer.distribute(tensor_dataset_fn(data, args.batch_size,
                                                                repeat=True)))
            for _ in range(args.warmup_steps):
                float(trainer.train_step(next(batches)))
            runs[form, adam] = (trainer, batches, [])
        for _ in range(args.windows):
            for trainer, batches, rates in runs.values():
                start = time.perf_counter()
                for _ in range(args.steps):
                    loss = float(trainer.train_step(next(batches)))
                rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
    keras.utils.clear_session()  # free these models before the next ones
    return {variant: (sorted(rates)[len(rates) // 2], loss)
            for variant, (_, _, rates) in runs.items()}


def _train_sizes(args):
    """(input size, heatmap size) of the train benchmark."""
    size = tuple(args.input_size)
    return size, (size[0] // 4, size[1] // 4)


def _model_macs(arch, winograd=None, input_size=INPUT_SIZE):
    """Multiply-accumulates of one forward pass (:func:`count_flops` / 2), 256x192 by default.

    ``winograd`` (True/False) counts the TFLite inference model of that form instead of the
    training graph (False: the direct sub-pixel form, the same count).
    """
    import keras

    from mrpose_tf.export import inference_model
    from mrpose_tf.models import build_model
    from mrpose_tf.models.complexity import count_flops

    model = build_model(arch, "resnet50", 17, input_size)
    if winograd is not None:
        model = inference_model(model, winograd=winograd)
    macs = count_flops(model) / 2
    keras.utils.clear_session()
    return macs


def _matmul_rate(dtype, size=2048, runs=5):
    """Best multiply-accumulates/s of a size^3 TF matmul in ``dtype`` (the GEMM ceiling)."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal((size, size), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((size, size), seed=(3, 4)), dtype)
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return size ** 3 / best


def _torch_model(arch):
    """A plain PyTorch equivalent of the Keras network (torchvision ResNet-50 + the head)."""
    import torch
    import torchvision
    from torch import nn

    def deconv(cin, cout):
        return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                             nn.BatchNorm2d(cout, momentum=0.1), nn.ReLU(inplace=True))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            r = torchvision.models.resnet50(weights=None)
            self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
            self.stages = nn.ModuleList([r.layer1, r.layer2, r.layer3, r.layer4])
            if arch == "simple_baseline":
                self.c5 = nn.Sequential(deconv(2048, 256), deconv(256, 256), deconv(256, 256))
            else:  # mrfeanet2
                self.c5 = nn.Sequential(deconv(2048, 1024), deconv(1024, 512), deconv(512, 256))
                self.c4 = nn.Sequential(deconv(1024, 512), deconv(512, 256))
                self.c3 = deconv(512, 256)
            self.final = nn.Conv2d(256, 17, 1)

        def forward(self, x):
            taps, x = [], self.stem(x)
            for stage in self.stages:
                x = stage(x)
                taps.append(x)
            if arch == "simple_baseline":
                return self.final(self.c5(taps[3]))
            fused = (taps[0] + self.c3(taps[1]) + self.c4(taps[2]) + self.c5(taps[3])) / 4
            return self.final(fused)

    return Net(), torch


def _measure_torch(arch, args):
    net, torch = _torch_model(arch)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    size, heatmap = _train_sizes(args)
    images = torch.randn(args.batch_size, 3, *size)
    targets = torch.rand(args.batch_size, 17, *heatmap)
    net.train()

    def step():
        optimizer.zero_grad()
        loss = 0.5 * ((net(images) - targets) ** 2).mean()
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup_steps):
        step()
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def cmd_train(args):
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    size, _ = _train_sizes(args)
    print(f"training step, {size[0]}x{size[1]}, batch {args.batch_size}, ResNet-50, "
          f"{args.warmup_steps} warm-up steps, then the median of {args.windows} windows of "
          f"{args.steps} steps, jit {'on' if args.jit else 'off'}")
    # The ceiling: a training step is ~3 forward passes of multiply-accumulates (forward,
    # input gradients, weight gradients); no step can beat this machine's best GEMM rate.
    gemm = {p: _matmul_rate("bfloat16" if p == "mixed_bfloat16" else "float32")
            for p in args.precisions if p != "mixed_float16"}
    print("GEMM ceiling (2048^3 tf.matmul): " + ", ".join(
        f"{p} {rate / 1e9:.0f} GMAC/s" for p, rate in gemm.items()))
    print(f"{'arch':<18}{'precision':<16}{'transposed conv':<17}{'adam':<7}{'img/s':>8}"
          f"{'x authors':>11}{'ceiling':>9}{'torch img/s':>13}")
    # The authors' rate was measured at 256x192, batch 8: no ratio for other settings.
    like_authors = size == INPUT_SIZE and args.batch_size == 8
    results = []
    for arch in args.archs:
        torch_rate = _measure_torch(arch, args) if have_torch else None
        torch_text = f"{torch_rate:.2f}" if torch_rate else "(no torch)"
        step_macs = 3 * _model_macs(arch, input_size=size)
        for precision in args.precisions:
            ceiling = gemm[precision] / step_macs if precision in gemm else None
            ceiling_text = f"{ceiling:.2f}" if ceiling else "-"
            for (form, adam), (rate, loss) in _measure_train_steps(arch, precision,
                                                                   args).items():
                ratio = rate / AUTHORS_IMAGES_PER_S[arch] if like_authors else None
                ratio_text = f"{ratio:.2f}x" if ratio else "-"
                print(f"{arch:<18}{precision:<16}{form:<17}{adam:<7}{rate:>8.2f}{ratio_text:>11}"
                      f"{ceiling_text:>9}{torch_text:>13}", flush=True)
                results.append({"arch": arch, "precision": precision, "transposed_conv": form,
                                "adam": adam, "images_per_s": rate,
                                "authors_pytorch_images_per_s": AUTHORS_IMAGES_PER_S[arch],
                                "ceiling_images_per_s": ceiling,
                                "train_macs_per_image": step_macs,
                                "torch_images_per_s": torch_rate, "last_loss": loss})
    print("ceiling = GEMM ceiling / (3 x forward multiply-accumulates per image); transposed "
          "conv: auto = the trainer's CPU rule (training.layers.uses_matmul_form); adam: fused = "
          "TF's kernel (the trainer's default), keras = the same Adam in Keras ops")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch_size": args.batch_size, "input_size": size,
                       "gemm_macs_per_s": gemm, "results": results}, f, indent=2)


def add_train(subparsers):
    p = subparsers.add_parser("train", help="training images/s of the trainer's step")
    p.add_argument("--archs", nargs="+", default=list(TRAIN_ARCHS), choices=TRAIN_ARCHS)
    p.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                   choices=["float32", "mixed_bfloat16", "mixed_float16"])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="steps per timed window")
    p.add_argument("--windows", type=int, default=5, help="timed windows; the median is kept")
    p.add_argument("--warmup_steps", type=int, default=3)
    p.add_argument("--jit", type=lambda s: s.lower() in ("1", "true", "yes"), default=False)
    p.add_argument("--input_size", type=int, nargs=2, default=list(INPUT_SIZE),
                   metavar=("HEIGHT", "WIDTH"), help="e.g. 96 64 (configs/synthetic_long.py)")
    p.add_argument("--transposed_conv", nargs="+", default=["auto"],
                   choices=TRANSPOSED_CONV_CHOICES,
                   help="config.train.transposed_conv: auto: the trainer's CPU rule "
                        "(training.layers.uses_matmul_form); matmul: every transposed conv as "
                        "MatmulConv2DTranspose; native: keras Conv2DTranspose everywhere. "
                        "Several: one row each, timed in interleaved windows")
    p.add_argument("--adam", nargs="+", default=["fused"], choices=["fused", "keras"],
                   help="fused: the trainer's Adam through TF's fused kernel "
                        "(config.train.fused_adam); keras: the same update in Keras ops. "
                        "Several: as --transposed_conv")
    p.add_argument("--json", default="", help="write the results here")
    p.set_defaults(func=cmd_train)


# The heads' transposed convs at 96x64 (batch 32), 256x192 and 384x288 (batch 8).
DECONV_SHAPES = ("3x2x2048x1024@32", "6x4x1024x512@32", "12x8x512x256@32", "8x6x256x256@32",
                 "8x6x2048x1024@8", "16x12x1024x512@8", "32x24x512x256@8", "8x6x2048x256@8",
                 "32x24x256x256@8", "48x36x512x256@8", "48x36x256x256@8")


def cmd_deconv(args):
    """Forward + backward ms of the paper's transposed conv: TF's kernel, one matmul, and the
    export's four 2x2 convs (the sub-pixel form, here with its phase kernels trained)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mrpose_tf.export.subpixel import SubPixelDeconv, subpixel_kernels
    from mrpose_tf.models import dtype_policy
    from mrpose_tf.training.layers import MatmulConv2DTranspose, uses_matmul_form

    print(f"4x4 stride-2 transposed conv, {args.precision}, forward + backward (input and "
          f"kernel gradients), median of {args.runs}; 'auto': the form the CPU trainer picks "
          f"(training.layers.uses_matmul_form)")
    print(f"{'input HxW, C_in -> C_out @ batch':<34}{'Conv2DTranspose':>16}{'matmul':>10}"
          f"{'sub-pixel':>11}{'auto':>9}")
    results = []
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        dims, batch = shape.split("@")
        height, width, c_in, c_out = (int(v) for v in dims.split("x"))
        x = tf.constant(rng.standard_normal((int(batch), height, width, c_in)), tf.float32)
        with dtype_policy(args.precision):
            native = keras.layers.Conv2DTranspose(c_out, 4, strides=2, padding="same",
                                                  use_bias=False)
            native.build(x.shape)
            matmul = MatmulConv2DTranspose(c_out, 4, strides=2, padding="same", use_bias=False)
            matmul.build(x.shape)
            subpixel = SubPixelDeconv(subpixel_kernels(native.kernel.numpy()))
            subpixel.build(x.shape)
        times = []
        for layer, kernels in ((native, [native.kernel]), (matmul, [matmul.kernel]),
                               (subpixel, subpixel.phase_kernels)):
            kernels = [kernel.value for kernel in kernels]  # the tf.Variables

            @tf.function
            def step(layer=layer, kernels=kernels):
                with tf.GradientTape() as tape:
                    tape.watch([x] + kernels)  # the sub-pixel phase kernels are not trainable
                    loss = tf.reduce_sum(tf.cast(layer(x), tf.float32))
                return tape.gradient(loss, [x] + kernels)

            times.append(_timed(lambda step=step: [g.numpy() for g in step()], args.runs, 2))
        auto = "matmul" if uses_matmul_form(height, width, c_in, native.compute_dtype) else "native"
        print(f"{height}x{width}, {c_in} -> {c_out} @ {batch}".ljust(34)
              + f"{times[0]:>13.1f} ms{times[1]:>7.1f} ms{times[2]:>8.1f} ms{auto:>9}", flush=True)
        results.append({"shape": shape, "conv2d_transpose_ms": times[0], "matmul_ms": times[1],
                        "subpixel_ms": times[2], "auto": auto})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"precision": args.precision, "results": results}, f, indent=2)


def add_deconv(subparsers):
    p = subparsers.add_parser("deconv", help="training cost of the transposed conv: TF's kernel "
                              "vs the matmul form (MatmulConv2DTranspose) vs the export's "
                              "sub-pixel form (four 2x2 convs)")
    p.add_argument("--shapes", nargs="+", default=list(DECONV_SHAPES),
                   help="HxWxC_INxC_OUT@BATCH")
    p.add_argument("--precision", default="mixed_bfloat16", choices=["float32", "mixed_bfloat16"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", default="", help="write the results here")
    p.set_defaults(func=cmd_deconv)


def cmd_adam(args):
    """ms of one Adam update over a model's parameters: Keras' ops vs TF's fused kernel."""
    import keras
    import tensorflow as tf

    from mrpose_tf.models import build_model
    from mrpose_tf.training.optimizer import Adam

    print(f"Adam update of every trainable variable (random gradients), median of {args.runs} "
          f"after 2 warm-up runs, graph mode")
    print(f"{'arch':<18}{'parameters':>12}{'Keras ops':>13}{'fused':>10}")
    results = []
    for arch in args.archs:
        # float32 variables, as the trainer's under every precision policy
        variables = build_model(arch, "resnet50", 17, INPUT_SIZE).trainable_variables
        gradients = [tf.random.stateless_normal(v.shape, seed=(i, 0), dtype=v.dtype) * 1e-3
                     for i, v in enumerate(variables)]
        times = []
        for fused in (False, True):
            optimizer = Adam(1e-3, fused=fused)
            optimizer.build(variables)
            update = tf.function(lambda optimizer=optimizer: optimizer.apply_gradients(
                zip(gradients, variables)))
            times.append(_timed(lambda update=update: (update(), variables[-1].numpy()),
                                args.runs, 2))
        count = sum(int(tf.size(v)) for v in variables)
        print(f"{arch:<18}{count / 1e6:>10.1f} M{times[0]:>10.1f} ms{times[1]:>7.1f} ms",
              flush=True)
        results.append({"arch": arch, "parameters": count, "keras_adam_ms": times[0],
                        "fused_adam_ms": times[1]})
        keras.utils.clear_session()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results}, f, indent=2)


def add_adam(subparsers):
    p = subparsers.add_parser("adam", help="one Adam update: in Keras ops vs the trainer's "
                              "fused kernel (config.train.fused_adam)")
    p.add_argument("--archs", nargs="+", default=list(TRAIN_ARCHS), choices=TRAIN_ARCHS)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--json", default="", help="write the results here")
    p.set_defaults(func=cmd_adam)


# --- inference -------------------------------------------------------------------------------

INFERENCE_ARCHS = ("simple_baseline", "mrfeanet2")
INFERENCE_RUNTIMES = ("keras", "saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8")


def _timed(fn, runs, warmup):
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(sorted(times)[len(times) // 2])


def _calibrate_batch_norm(model, crops):
    """Set every BatchNormalization's moving statistics to its batch statistics on ``crops``.

    A random-weight network keeps the initial statistics (mean 0, variance 1), so its branches
    end up orders of magnitude apart, unlike a trained one; int8 then sees scales that no
    trained model has (an MRFeaNet2 int8 ADD of two such branches falls outside XNNPACK).
    """
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(crops, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def _inference_runners(arch, args, workdir):
    """{runtime: (run batch-1 fn, run batch-16 fn)} for one architecture (random weights).

    TFLite runtimes also get ``xnnpack_partitions`` (attribute of the batch-1 fn): the number
    of XNNPACK delegate partitions (1: the whole graph runs in XNNPACK).
    """
    import numpy as np
    import tensorflow as tf

    from mrpose_tf.config import base_config
    from mrpose_tf.export import export_saved_model
    from mrpose_tf.export.tflite import (convert_all, convert_pose_model, delegation,
                                         litert_interpreter)
    from mrpose_tf.models import build_model

    rng = np.random.default_rng(0)
    one = rng.normal(0, 60, (1,) + INPUT_SIZE + (3,)).astype(np.float32)
    sixteen = rng.normal(0, 60, (16,) + INPUT_SIZE + (3,)).astype(np.float32)
    model = build_model(arch, "resnet50", 17, INPUT_SIZE, backbone_weights=None)
    _calibrate_batch_norm(model, sixteen[:4])
    graph = tf.function(lambda x: model(x, training=False))
    runners = {"keras": (lambda: graph(one).numpy(), lambda: graph(sixteen).numpy())}
    if "saved_model" in args.runtimes:
        config = base_config()
        config.model.input_size = INPUT_SIZE
        serving = tf.saved_model.load(export_saved_model(
            model, config, os.path.join(workdir, arch))).signatures["serving_default"]
        runners["saved_model"] = (lambda: serving(image=tf.constant(one)),
                                  lambda: serving(image=tf.constant(sixteen)))
    names = [r for r in args.runtimes if r.startswith("tflite_")]
    converted = convert_pose_model(model, [r.split("_")[1] for r in names],
                                   sixteen[:args.calibration_crops])
    flatbuffers = {name: converted[name.split("_")[1]] for name in names}
    if args.naive_tflite:  # the plain TRANSPOSE_CONV conversion, to compare
        flatbuffers["tflite_fp32_naive"] = convert_all(model, ["fp32"])["fp32"]
    for name, flatbuffer in flatbuffers.items():
        interpreter = litert_interpreter(flatbuffer, num_threads=args.threads)
        batch1 = _tflite_invoker(interpreter, one)
        batch1.xnnpack_partitions = delegation(interpreter)[0]
        runners[name] = (batch1, _tflite_invoker(interpreter, sixteen))
    return runners


def _tflite_invoker(interpreter, crops):
    """fn() that runs ``crops`` through ``interpreter`` one at a time (its fixed batch of 1)."""
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run():
        for crop in crops:
            interpreter.set_tensor(inp["index"], crop[None])
            interpreter.invoke()
            interpreter.get_tensor(out["index"])

    return run


def _xnnpack_rate(quantization, threads, runs=20):
    """Best multiply-accumulates/s of XNNPACK here on plain convolutions (the ceiling).

    Two TFLite models, each a stack of convolutions at ResNet-like sizes (1x1 1024->1024 and
    3x3 256->256 at 32x24); the faster one's median rate is the ceiling for a whole model.
    """
    import keras
    import numpy as np

    from mrpose_tf.export.tflite import convert_all, litert_interpreter

    best = 0.0
    for kernel, channels in ((1, 1024), (3, 256)):
        inputs = keras.Input((32, 24, channels))
        x = inputs
        for _ in range(4):
            x = keras.layers.Conv2D(channels, kernel, padding="same")(x)
        model = keras.Model(inputs, x)
        crops = np.random.default_rng(0).normal(0, 1, (4, 32, 24, channels)).astype(np.float32)
        flatbuffer = convert_all(model, [quantization], crops)[quantization]
        run = _tflite_invoker(litert_interpreter(flatbuffer, num_threads=threads), crops[:1])
        macs = 4 * 32 * 24 * kernel * kernel * channels * channels
        best = max(best, macs / (_timed(run, runs, 3) / 1e3))
        keras.utils.clear_session()
    return best


def _torch_inference_runners(arch, threads):
    """{'torch': (batch-1 fn, batch-16 fn)} of the same network in plain PyTorch, if installed."""
    try:
        net, torch = _torch_model(arch)
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    net.eval()
    one, sixteen = torch.randn(1, 3, *INPUT_SIZE), torch.randn(16, 3, *INPUT_SIZE)

    def run(x):
        with torch.no_grad():
            net(x)

    return {"torch": (lambda: run(one), lambda: run(sixteen))}


def cmd_inference(args):
    import tempfile

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    latency, throughput, partitions, floors = {}, {}, {}, {}
    ceilings = {q: _xnnpack_rate(q, args.threads) for q in ("fp32", "int8")
                if f"tflite_{q}" in args.runtimes}
    if ceilings:
        print("XNNPACK ceiling (best of plain 1x1 / 3x3 conv stacks): " + ", ".join(
            f"{q} {rate / 1e9:.0f} GMAC/s" for q, rate in ceilings.items()))
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.archs:
            # The float models run the Winograd form (fewer MACs), int8 the direct one.
            floors[arch] = {f"tflite_{q}": _model_macs(arch, winograd=q == "fp32") / rate * 1e3
                            for q, rate in ceilings.items()}
            runners = {**_inference_runners(arch, args, workdir),
                       **_torch_inference_runners(arch, args.threads)}
            latency[arch], throughput[arch], partitions[arch] = {}, {}, {}
            for name, (batch1, batch16) in runners.items():
                latency[arch][name] = _timed(batch1, args.runs, args.warmup)
                throughput[arch][name] = 16e3 / _timed(batch16, max(3, args.runs // 4), 1)
                delegated = ""
                if name in floors[arch]:
                    delegated = f"   floor {floors[arch][name]:.1f} ms"
                if hasattr(batch1, "xnnpack_partitions"):
                    partitions[arch][name] = batch1.xnnpack_partitions
                    delegated += f"   XNNPACK partitions: {batch1.xnnpack_partitions}"
                print(f"{arch:<16}{name:<20}{latency[arch][name]:>10.1f} ms"
                      f"{throughput[arch][name]:>10.1f} img/s (batch 16){delegated}", flush=True)
    if not any("torch" in by_runtime for by_runtime in latency.values()):
        print("torch/torchvision not installed: PyTorch column skipped")
    print(f"ResNet-50, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, random weights, {args.threads} threads; "
          f"latency = median of {args.runs} batch-1 runs; floor = the model's multiply-"
          f"accumulates at the XNNPACK ceiling")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"latency_ms": latency, "throughput_b16": throughput,
                       "xnnpack_partitions": partitions, "floor_ms": floors,
                       "xnnpack_macs_per_s": ceilings,
                       "threads": args.threads, "runs": args.runs}, f, indent=2)


def add_inference(subparsers):
    p = subparsers.add_parser("inference", help="batch-1 latency and batch-16 throughput of "
                              "Keras, SavedModel and TFLite fp32/fp16/int8")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--archs", nargs="+", default=list(INFERENCE_ARCHS))
    p.add_argument("--runtimes", nargs="+", default=list(INFERENCE_RUNTIMES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calibration_crops", type=int, default=4)
    p.add_argument("--naive_tflite", action="store_true",
                   help="also time fp32 TFLite with the plain transposed convs")
    p.set_defaults(func=cmd_inference)


def cmd_stages(args):
    """Batch-1 TFLite latency of each stage against its multiply-accumulates at the ceiling.

    Times the model cut after the stem (``pool1_pool``) and after each ResNet stage, then the
    whole model; a stage's time is the difference between consecutive cuts.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from mrpose_tf.export import inference_model
    from mrpose_tf.export.tflite import convert_all, convert_pose_model, litert_interpreter
    from mrpose_tf.models import build_model
    from mrpose_tf.models.backbones import stage_outputs
    from mrpose_tf.models.complexity import count_flops

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    q = args.quantization
    ceiling = _xnnpack_rate(q, args.threads)
    crops = np.random.default_rng(0).normal(0, 60, (4,) + INPUT_SIZE + (3,)).astype(np.float32)
    model = build_model(args.arch, "resnet50", 17, INPUT_SIZE, backbone_weights=None)
    _calibrate_batch_norm(model, crops)
    taps = stage_outputs(model)
    cuts = [("stem", model.get_layer("pool1_pool").output)] + [
        (f"stage {s}", taps[f"C{s}"]) for s in (2, 3, 4, 5)] + [("heads", None)]
    print(f"{args.arch} TFLite {q}, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, {args.threads} threads; "
          f"XNNPACK ceiling {ceiling / 1e9:.0f} GMAC/s")
    print(f"{'segment':<10}{'ms':>8}{'GMAC':>8}{'floor ms':>10}{'GMAC/s':>8}{'of ceiling':>12}")
    runners, macs = [], []
    for name, output in cuts:
        if output is None:  # the whole model, in the exported form of its quantization
            flatbuffer = convert_pose_model(model, [q], crops)[q]
            macs.append(count_flops(inference_model(model, winograd=q != "int8")) / 2)
        else:
            part = keras.Model(model.input, output)
            flatbuffer = convert_all(part, [q], crops)[q]
            macs.append(count_flops(part) / 2)
        runners.append(_tflite_invoker(
            litert_interpreter(flatbuffer, num_threads=args.threads), crops[:1]))
    # The cuts' rounds interleave, so that a slow spell of the host hits all of them alike.
    totals = [min(times) for times in zip(*(
        [_timed(run, args.runs, 3) for run in runners] for _ in range(args.rounds)))]
    done_ms = done_macs = 0.0
    rows = {}
    for (name, _), total_ms, cut_macs in zip(cuts, totals, macs):
        ms, seg_macs = total_ms - done_ms, cut_macs - done_macs
        rows[name] = {"ms": ms, "macs": seg_macs}
        print(f"{name:<10}{ms:>8.2f}{seg_macs / 1e9:>8.2f}{seg_macs / ceiling * 1e3:>10.2f}"
              f"{seg_macs / ms / 1e6:>8.0f}{seg_macs / ms / 1e6 / (ceiling / 1e9):>11.0%}",
              flush=True)
        done_ms, done_macs = total_ms, cut_macs
    print(f"{'total':<10}{done_ms:>8.2f}{done_macs / 1e9:>8.2f}{done_macs / ceiling * 1e3:>10.2f}")
    print(f"ms = the model cut there (best of {args.rounds} interleaved medians of {args.runs} "
          f"runs) minus the previous cut; floor = the segment's multiply-accumulates at the "
          f"ceiling")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "quantization": q, "xnnpack_macs_per_s": ceiling,
                       "segments": rows, "total_ms": done_ms}, f, indent=2)


def add_stages(subparsers):
    p = subparsers.add_parser("stages", help="TFLite batch-1 latency per ResNet stage and the "
                              "heads, against each one's multiply-accumulates at the ceiling")
    p.add_argument("--arch", default="simple_baseline", choices=INFERENCE_ARCHS)
    p.add_argument("--quantization", default="int8", choices=("fp32", "int8"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default="", help="write the results here")
    p.set_defaults(func=cmd_stages)


# --- keras: the pure-Keras models under any backend (e.g. JAX on a GPU machine) ------------

def _median_rate(step, sync, args):
    """Images/s of ``step()``: the median over ``args.windows`` windows of ``args.steps`` steps.

    ``sync()`` waits for the device at each window's ends (Keras' train_on_batch and
    predict_on_batch already return host values); the first ``args.warmup_steps`` steps
    (compilation, autotuning) are not timed. A median of windows is robust to the odd slow
    window on a shared host.
    """
    for _ in range(args.warmup_steps):
        step()
    rates = []
    for _ in range(args.windows):
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
    return float(sorted(rates)[len(rates) // 2])


def _keras_rates(arch, precision, args):
    """(train img/s, inference img/s) of ``model.compile`` + ``train_on_batch`` / a jitted call."""
    import keras
    import numpy as np

    from mrpose_tf.losses import joints_mse
    from mrpose_tf.models import build_model, dtype_policy

    with dtype_policy(precision):
        model = build_model(arch, "resnet50", 17, INPUT_SIZE, backbone_weights=None)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True,
                  loss=lambda true, pred: joints_mse(true, pred))
    rng = np.random.default_rng(0)
    images = keras.ops.convert_to_tensor(
        rng.normal(0, 1, (args.batch_size,) + INPUT_SIZE + (3,)).astype(np.float32))
    targets = keras.ops.convert_to_tensor(
        rng.uniform(0, 1, (args.batch_size,) + HEATMAP_SIZE + (17,)).astype(np.float32))
    train = _median_rate(lambda: model.train_on_batch(images, targets), lambda: None, args)
    infer = _median_rate(lambda: model.predict_on_batch(images), lambda: None, args)
    keras.utils.clear_session()
    return train, infer


def _torch_rates(arch, precision, args):
    """The same two numbers for the plain PyTorch network (channels-last, bf16 autocast).

    Eager PyTorch, as the authors' code runs: no torch.compile, no CUDA graphs.
    """
    net, torch = _torch_model(arch)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device, memory_format=torch.channels_last)
    images = torch.randn(args.batch_size, 3, *INPUT_SIZE, device=device).to(
        memory_format=torch.channels_last)
    targets = torch.rand(args.batch_size, 17, *HEATMAP_SIZE, device=device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    autocast = torch.autocast(device, torch.bfloat16, enabled=precision == "mixed_bfloat16")

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = 0.5 * ((net(images).float() - targets) ** 2).mean()
        loss.backward()
        optimizer.step()

    def infer_step():  # heatmaps back on the host, as Keras' predict_on_batch returns them
        with torch.no_grad(), autocast:
            net(images).float().cpu()

    rates = []
    for mode, step in (("train", train_step), ("eval", infer_step)):
        getattr(net, mode)()
        rates.append(_median_rate(step, sync, args))
    return tuple(rates)


def cmd_keras(args):
    os.environ["KERAS_BACKEND"] = args.backend
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != args.backend:
        raise SystemExit(f"keras is already imported with another backend than {args.backend}")
    import keras

    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    devices = _backend_devices(args.backend)
    print(f"Keras {keras.__version__} on {args.backend} ({devices}); {INPUT_SIZE[0]}x"
          f"{INPUT_SIZE[1]}, batch {args.batch_size}, ResNet-50; images/s = median of "
          f"{args.windows} windows of {args.steps} steps")
    print(f"{'arch':<18}{'precision':<16}{'train img/s':>12}{'infer img/s':>12}"
          f"{'torch train':>13}{'torch infer':>13}")
    results = []
    for arch in args.archs:
        for precision in args.precisions:
            train, infer = _keras_rates(arch, precision, args)
            torch_train, torch_infer = (_torch_rates(arch, precision, args) if have_torch
                                        else (None, None))
            text = (f"{torch_train:>13.1f}{torch_infer:>13.1f}" if have_torch
                    else f"{'(no torch)':>13}{'':>13}")
            print(f"{arch:<18}{precision:<16}{train:>12.1f}{infer:>12.1f}{text}", flush=True)
            results.append({"arch": arch, "precision": precision, "train_images_per_s": train,
                            "inference_images_per_s": infer, "torch_train_images_per_s":
                            torch_train, "torch_inference_images_per_s": torch_infer})
            if args.json:  # after every row: a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump({"backend": args.backend, "devices": devices,
                               "keras_version": keras.__version__,
                               "batch_size": args.batch_size, "input_size": INPUT_SIZE,
                               "results": results}, f, indent=2)


def _backend_devices(backend):
    if backend == "jax":
        import jax
        return ", ".join(sorted({d.device_kind for d in jax.devices()}))
    if backend == "torch":
        import torch
        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return backend


def add_keras(subparsers):
    p = subparsers.add_parser("keras", help="training and inference images/s of the pure-Keras "
                              "models under a Keras backend (jax, torch, tensorflow), next to "
                              "plain PyTorch; e.g. on a GPU machine without TensorFlow")
    p.add_argument("--backend", default="jax", choices=["jax", "torch", "tensorflow"])
    p.add_argument("--archs", nargs="+", default=list(TRAIN_ARCHS), choices=TRAIN_ARCHS)
    p.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                   choices=["float32", "mixed_bfloat16"])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="steps per timed window")
    p.add_argument("--windows", type=int, default=5, help="timed windows; the median is kept")
    p.add_argument("--warmup_steps", type=int, default=5)
    p.add_argument("--json", default="", help="write the results here (after every row)")
    p.set_defaults(func=cmd_keras)


# --- registry --------------------------------------------------------------------------------

SUBCOMMANDS = [add_pipeline, add_train, add_adam, add_deconv, add_inference, add_stages,
               add_keras]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
