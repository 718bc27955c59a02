"""deconv: forward + backward ms of the heads' 4x4 stride-2 transposed conv in three forms.

TensorFlow's Conv2DTranspose kernel, the trainer's matmul form (MatmulConv2DTranspose) and
the export's sub-pixel form (four 2x2 convs, here with its phase kernels trained); 'auto' is
the form the CPU trainer picks. The measured table and the rule it sets are in docs/.
"""
import json

from absl import flags

from mrpose_tf.benchmarks.common import define_list
from mrpose_tf.benchmarks.timing import timed

# The heads' transposed convs at 96x64 (batch 32), 256x192 and 384x288 (batch 8).
DECONV_SHAPES = ("3x2x2048x1024@32", "6x4x1024x512@32", "12x8x512x256@32", "8x6x256x256@32",
                 "8x6x2048x1024@8", "16x12x1024x512@8", "32x24x512x256@8", "8x6x2048x256@8",
                 "32x24x256x256@8", "48x36x512x256@8", "48x36x256x256@8")


def run(args):
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

            times.append(timed(lambda step=step: [g.numpy() for g in step()], args.runs, 2))
        auto = "matmul" if uses_matmul_form(height, width, c_in, native.compute_dtype) else "native"
        print(f"{height}x{width}, {c_in} -> {c_out} @ {batch}".ljust(34)
              + f"{times[0]:>13.1f} ms{times[1]:>7.1f} ms{times[2]:>8.1f} ms{auto:>9}", flush=True)
        results.append({"shape": shape, "conv2d_transpose_ms": times[0], "matmul_ms": times[1],
                        "subpixel_ms": times[2], "auto": auto})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"precision": args.precision, "results": results}, f, indent=2)


NAME = "deconv"
HELP = ("training cost of the transposed conv: TF's kernel vs the matmul form "
        "(MatmulConv2DTranspose) vs the export's sub-pixel form (four 2x2 convs)")


def define_flags(fv):
    define_list(fv, __name__, "shapes", DECONV_SHAPES, "HxWxC_INxC_OUT@BATCH, comma-separated")
    flags.DEFINE_enum("precision", "mixed_bfloat16", ["float32", "mixed_bfloat16"],
                      "Keras dtype policy", flag_values=fv)
    flags.DEFINE_integer("runs", 5, "timed runs; the median is kept", flag_values=fv)
    flags.DEFINE_string("json", "", "write the results here", flag_values=fv)
