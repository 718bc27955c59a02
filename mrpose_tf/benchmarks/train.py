"""train: images/s of the trainer's own step, against the GEMM ceiling and PyTorch.

The ceiling: a training step is ~3 forward passes of multiply-accumulates (forward, input
gradients, weight gradients); no step can beat this machine's best GEMM rate on them.
"""
import itertools
import json
import os
import tempfile

from absl import flags

from mrpose_tf.benchmarks.common import (ARCHS, INPUT_SIZE, define_list, gemm_rate, model_macs,
                                         torch_peer)
from mrpose_tf.benchmarks.timing import interleaved, median, window_rates

# mrpose_tf.training.layers.TRANSPOSED_CONV_CHOICES, spelt out: importing it (and keras) while
# the flags are parsed would fix the Keras backend before the 'keras' subcommand chooses one.
TRANSPOSED_CONV_CHOICES = ("auto", "matmul", "native")


def _sizes(args):
    size = tuple(args.input_size)
    return size, (size[0] // 4, size[1] // 4)


def measure_trainer(arch, precision, args):
    """{(transposed conv form, adam): (images/s, last loss)} of ``Trainer.train_step`` on
    random in-memory tensors, one trainer per variant, their windows interleaved."""
    import keras

    from mrpose_tf.config import paper_config
    from mrpose_tf.training import Trainer, make_strategy
    from mrpose_tf.training.inputs import random_examples, tensor_dataset_fn

    size, heatmap = _sizes(args)
    config = paper_config("coco", arch, "resnet50", INPUT_SIZE)
    config.model.input_size, config.model.heatmap_size = size, heatmap
    config.model.backbone_weights = None
    config.train.batch_size = args.batch_size
    strategy = make_strategy("one_device")
    data = random_examples(args.batch_size, size, heatmap, 17)
    steps, losses = {}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for form, adam in itertools.product(args.transposed_conv, args.adam):
            config.train.fused_adam = adam == "fused"
            config.train.transposed_conv = form
            trainer = Trainer(config, os.path.join(workdir, f"{form}_{adam}"), strategy,
                              steps_per_epoch=1000, precision=precision,
                              jit_compile=args.jit, log=lambda line: None)
            batches = iter(trainer.distribute(tensor_dataset_fn(data, args.batch_size,
                                                                repeat=True)))

            def step(trainer=trainer, batches=batches, key=(form, adam)):
                losses[key] = float(trainer.train_step(next(batches)))  # waits for the step

            steps[form, adam] = step
        rates = interleaved(steps, args.batch_size, args.steps, args.windows, args.warmup_steps)
    keras.utils.clear_session()  # free these models before the next ones
    return {variant: (rate, losses[variant]) for variant, rate in rates.items()}


def measure_torch(arch, args):
    """Images/s of the same network's training step in eager PyTorch (Adam), or None."""
    net, torch = torch_peer(arch)
    if net is None:
        return None
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    size, heatmap = _sizes(args)
    images = torch.randn(args.batch_size, 3, *size)
    targets = torch.rand(args.batch_size, 17, *heatmap)
    net.train()

    def step():
        optimizer.zero_grad()
        loss = 0.5 * ((net(images) - targets) ** 2).mean()
        loss.backward()
        optimizer.step()

    return median(window_rates(step, args.batch_size, args.steps, args.windows,
                               args.warmup_steps))


def run(args):
    size, _ = _sizes(args)
    print(f"training step, {size[0]}x{size[1]}, batch {args.batch_size}, ResNet-50, "
          f"{args.warmup_steps} warm-up steps, then the median of {args.windows} windows of "
          f"{args.steps} steps, jit {'on' if args.jit else 'off'}")
    gemm = {p: gemm_rate("bfloat16" if p == "mixed_bfloat16" else "float32")
            for p in args.precisions if p != "mixed_float16"}
    print("GEMM ceiling (2048^3 tf.matmul): " + ", ".join(
        f"{p} {rate / 1e9:.0f} GMAC/s" for p, rate in gemm.items()))
    print(f"{'arch':<18}{'precision':<16}{'transposed conv':<17}{'adam':<7}{'img/s':>8}"
          f"{'x torch':>9}{'ceiling':>9}{'torch img/s':>13}")
    results = []
    for arch in args.archs:
        torch_rate = measure_torch(arch, args)
        torch_text = f"{torch_rate:.2f}" if torch_rate else "(no torch)"
        step_macs = 3 * model_macs(arch, input_size=size)
        for precision in args.precisions:
            ceiling = gemm[precision] / step_macs if precision in gemm else None
            ceiling_text = f"{ceiling:.2f}" if ceiling else "-"
            for (form, adam), (rate, loss) in measure_trainer(arch, precision, args).items():
                ratio_text = f"{rate / torch_rate:.2f}x" if torch_rate else "-"
                print(f"{arch:<18}{precision:<16}{form:<17}{adam:<7}{rate:>8.2f}{ratio_text:>9}"
                      f"{ceiling_text:>9}{torch_text:>13}", flush=True)
                results.append({"arch": arch, "precision": precision, "transposed_conv": form,
                                "adam": adam, "images_per_s": rate,
                                "ceiling_images_per_s": ceiling,
                                "train_macs_per_image": step_macs,
                                "torch_images_per_s": torch_rate, "last_loss": loss})
    print("x torch: against the same network and step in PyTorch (float32, this run); "
          "ceiling = GEMM ceiling / (3 x forward multiply-accumulates per image); transposed "
          "conv: auto = the trainer's CPU rule (training.layers.uses_matmul_form); adam: fused = "
          "TF's kernel (the trainer's default), keras = the same Adam in Keras ops")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch_size": args.batch_size, "input_size": size,
                       "gemm_macs_per_s": gemm, "results": results}, f, indent=2)


NAME = "train"
HELP = "training images/s of the trainer's step"


def define_flags(fv):
    define_list(fv, __name__, "archs", ARCHS, "architectures", choices=ARCHS)
    define_list(fv, __name__, "precisions", ["float32", "mixed_bfloat16"], "Keras dtype policies",
                choices=["float32", "mixed_bfloat16", "mixed_float16"])
    flags.DEFINE_integer("batch_size", 8, "images per step", flag_values=fv)
    flags.DEFINE_integer("steps", 3, "steps per timed window", flag_values=fv)
    flags.DEFINE_integer("windows", 5, "timed windows; the median is kept", flag_values=fv)
    flags.DEFINE_integer("warmup_steps", 3, "untimed steps first", flag_values=fv)
    flags.DEFINE_boolean("jit", False, "XLA-compile the step", flag_values=fv)
    define_list(fv, __name__, "input_size", INPUT_SIZE, "HEIGHT,WIDTH, e.g. 96,64 "
                "(configs/synthetic_long.py)", parse=int, length=2)
    define_list(fv, __name__, "transposed_conv", ["auto"], "config.train.transposed_conv: "
                "auto: the trainer's CPU rule (training.layers.uses_matmul_form); matmul: every "
                "transposed conv as MatmulConv2DTranspose; native: keras Conv2DTranspose "
                "everywhere. Several: one row each, timed in interleaved windows",
                choices=TRANSPOSED_CONV_CHOICES)
    define_list(fv, __name__, "adam", ["fused"], "fused: the trainer's Adam through TF's "
                "fused kernel (config.train.fused_adam); keras: the same update in Keras ops. "
                "Several: as --transposed_conv", choices=["fused", "keras"])
    flags.DEFINE_string("json", "", "write the results here", flag_values=fv)
