"""adam: ms of one Adam update over a model's parameters, Keras ops against the fused kernel."""
import json

from absl import flags

from mrpose_tf.benchmarks.common import ARCHS, INPUT_SIZE, define_list
from mrpose_tf.benchmarks.timing import timed


def run(args):
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
            times.append(timed(lambda update=update: (update(), variables[-1].numpy()),
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


NAME = "adam"
HELP = "one Adam update: in Keras ops vs the trainer's fused kernel (config.train.fused_adam)"


def define_flags(fv):
    define_list(fv, __name__, "archs", ARCHS, "architectures", choices=ARCHS)
    flags.DEFINE_integer("runs", 7, "timed runs; the median is kept", flag_values=fv)
    flags.DEFINE_string("json", "", "write the results here", flag_values=fv)
