"""Parameter and FLOP counts of a built model (for the README table and model cards).

FLOPs are counted analytically from the layer shapes as 2 x multiply-accumulates of the
convolutions, transposed convolutions and dense layers (the convention of most papers;
BatchNorm, ReLU, adds and pooling are not counted).
"""
from keras import layers


def _macs(layer):
    counter = getattr(layer, "multiply_accumulates", None)
    if callable(counter):  # layers that count their own (e.g. the export rewrites)
        return counter()
    if isinstance(layer, layers.Conv2DTranspose):
        # Every input pixel scatters a k x k x Cout patch per input channel.
        _, h, w, cin = layer.input.shape
        kh, kw = layer.kernel_size
        return h * w * kh * kw * cin * layer.filters
    if isinstance(layer, layers.Conv2D):
        _, h, w, _ = layer.output.shape
        cin = layer.input.shape[-1]
        kh, kw = layer.kernel_size
        return h * w * kh * kw * (cin // layer.groups) * layer.filters
    if isinstance(layer, layers.Dense):
        return layer.input.shape[-1] * layer.units
    return 0


def count_flops(model):
    """Forward-pass FLOPs of one image (2 x MACs of the conv/deconv/dense layers)."""
    return 2 * sum(_macs(layer) for layer in model.layers)


def count_params(model, trainable_only=False):
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(w.numpy().size for w in weights))
