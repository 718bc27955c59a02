"""A two-layer stand-in for the ResNet, for tests of the plumbing around a network.

Shared by tests/conftest.py (the `small_network` fixture) and the subprocess workers, which
cannot use fixtures. MRPOSE_TEST_RESNET=1 keeps the ResNet-50 everywhere.
"""
import os


def stand_in_backbone(name, inputs, weights=None, style="keras"):
    """(None, {'C5': (N, H/32, W/32, 32)}): what the SimpleBaseline head reads of a ResNet,
    with one BatchNormalization so that synchronized statistics are still exercised."""
    import keras

    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="stand_in_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stand_in_bn")(x)
    x = keras.layers.ReLU(name="stand_in_relu")(x)
    return None, {"C5": keras.layers.AveragePooling2D(16, name="stand_in_pool")(x)}


def use_stand_in():
    """False when MRPOSE_TEST_RESNET=1 asks for the real ResNet-50."""
    return os.environ.get("MRPOSE_TEST_RESNET") != "1"


def install():
    """Make build_model use the stand-in in this process (for subprocess workers)."""
    if use_stand_in():
        import mrpose_tf.models

        mrpose_tf.models.build_backbone = stand_in_backbone
