"""keras: training and inference images/s of the pure-Keras models under a Keras backend
(jax, torch, tensorflow), next to the same network in plain PyTorch; e.g. on a GPU machine
without TensorFlow."""
import json
import os
import sys

from absl import flags

from mrpose_tf.benchmarks.common import (ARCHS, HEATMAP_SIZE, INPUT_SIZE, define_list,
                                         torch_peer)
from mrpose_tf.benchmarks.timing import median, window_rates


def _median_rate(step, args, sync=lambda: None):
    """Images/s of ``step()``: the median of ``args.windows`` windows of ``args.steps`` steps
    after ``args.warmup_steps`` (compilation, autotuning); ``sync()`` waits for the device."""
    return median(window_rates(step, args.batch_size, args.steps, args.windows,
                               args.warmup_steps, sync))


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
    train = _median_rate(lambda: model.train_on_batch(images, targets), args)
    infer = _median_rate(lambda: model.predict_on_batch(images), args)
    keras.utils.clear_session()
    return train, infer


def _torch_rates(arch, precision, args):
    """The same two numbers for the plain PyTorch network (channels-last, bf16 autocast).

    Eager PyTorch, as the authors' code runs: no torch.compile, no CUDA graphs.
    """
    net, torch = torch_peer(arch)
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
        rates.append(_median_rate(step, args, sync))
    return tuple(rates)


def run(args):
    os.environ["KERAS_BACKEND"] = args.backend
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != args.backend:
        raise SystemExit(f"keras is already imported with another backend than {args.backend}")
    import keras

    have_torch = torch_peer("simple_baseline")[0] is not None
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


NAME = "keras"
HELP = ("training and inference images/s of the pure-Keras models under a Keras backend "
        "(jax, torch, tensorflow), next to plain PyTorch; e.g. on a GPU machine without "
        "TensorFlow")


def define_flags(fv):
    flags.DEFINE_enum("backend", "jax", ["jax", "torch", "tensorflow"], "Keras backend",
                      flag_values=fv)
    define_list(fv, __name__, "archs", ARCHS, "architectures", choices=ARCHS)
    define_list(fv, __name__, "precisions", ["float32", "mixed_bfloat16"], "Keras dtype policies",
                choices=["float32", "mixed_bfloat16"])
    flags.DEFINE_integer("batch_size", 32, "images per step", flag_values=fv)
    flags.DEFINE_integer("steps", 10, "steps per timed window", flag_values=fv)
    flags.DEFINE_integer("windows", 5, "timed windows; the median is kept", flag_values=fv)
    flags.DEFINE_integer("warmup_steps", 5, "untimed steps first", flag_values=fv)
    flags.DEFINE_string("json", "", "write the results here (after every row)", flag_values=fv)
