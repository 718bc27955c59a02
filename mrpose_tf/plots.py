"""Figures drawn with matplotlib: a run's learning curve.

  python -m mrpose_tf.plots --workdir=runs/quickstart --output=learning_curve.png

redraws the curve of a run from its ``metrics.jsonl`` (what the quickstart writes at its
end, and what the pictures in docs/ are). matplotlib's object API with the Agg canvas is
used, so drawing never changes the pyplot backend of a notebook that imports this.
"""
import os

# key in the validation rows: (legend label, factor to a fraction); MPII's PCKh is in percent.
VALIDATION_METRICS = {"AP": ("AP (COCO OKS)", 1.0), "PCK": ("heatmap PCK@0.05", 1.0),
                      "Mean": ("PCKh@0.5 (MPII)", 0.01)}


def plot_learning_curve(curve, path=None, title=None):
    """The training loss and the validation metrics against the step, two stacked axes.

    Args:
      curve: {'train': [{'step', 'loss', ...}], 'val': [{'step', 'AP', 'PCK', ...}]}, as
        :func:`mrpose_tf.training.read_metrics` returns; either list may be empty.
      path: if given, the PNG to write (100 dpi).
      title: the figure's title (e.g. the run's name).

    Returns:
      The ``matplotlib.figure.Figure``: axes[0] holds one line (training loss, log scale when
      every loss is positive), axes[1] one line per validation metric present (AP, PCK, and
      MPII's Mean PCKh divided by 100, so each in [0, 1]; in that order), labelled as in
      ``VALIDATION_METRICS``.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 6), dpi=100, layout="constrained")
    loss_axes, val_axes = figure.subplots(2, 1, sharex=True)
    train = [(r["step"], r["loss"]) for r in curve.get("train", []) if "loss" in r]
    if train:
        steps, losses = zip(*train)
        loss_axes.plot(steps, losses, color="tab:blue", label="loss")
        if min(losses) > 0:
            loss_axes.set_yscale("log")
    loss_axes.set_ylabel("training loss")
    loss_axes.grid(True, alpha=0.3)
    for key, (label, factor) in VALIDATION_METRICS.items():
        points = [(r["step"], r[key] * factor) for r in curve.get("val", []) if key in r]
        if points:
            val_axes.plot(*zip(*points), marker="o", label=label)
    val_axes.set_ylim(0.0, 1.0)
    val_axes.set_xlabel("step")
    val_axes.set_ylabel("validation")
    val_axes.grid(True, alpha=0.3)
    if val_axes.lines:
        val_axes.legend(loc="upper left")
    if title:
        figure.suptitle(title)
    if path:
        figure.savefig(path)
    return figure


def _main(argv):
    from absl import app, flags

    from mrpose_tf.training.trainer import read_metrics

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir, output = flags.FLAGS.workdir, flags.FLAGS.output
    curve = read_metrics(workdir)
    if not curve["train"] and not curve["val"]:
        raise app.UsageError(f"{os.path.join(workdir, 'metrics.jsonl')}: no metrics")
    plot_learning_curve(curve, output, title=flags.FLAGS.title)
    print(f"wrote {output}")


if __name__ == "__main__":  # flags only here: importing this module defines none
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "The run directory (its metrics.jsonl).", required=True)
    flags.DEFINE_string("output", "learning_curve.png", "The PNG to write.")
    flags.DEFINE_string("title", None, "The figure's title.")
    app.run(_main)
