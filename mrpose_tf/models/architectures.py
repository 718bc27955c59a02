"""The five heads of the paper, each one short function next to its figure.

Each takes the backbone stage outputs ``c`` ({'C2'..'C5'}) and K, and returns the
heatmap tensor at stride 4. Notation (SPEC section 1): D = deconv, T = transposed,
P = projection, F = final.
"""
from keras import layers

from mrpose_tf.models.blocks import add, deconv, deconv_stack, final, projection, transposed


def simple_baseline(c, k):
    """SimpleBaseline (paper Fig. 2): F(D256(D256(D256(C5))))."""
    return final(deconv_stack(c["C5"], [256, 256, 256], "deconv"), k)


def mrheatnet1(c, k):
    """MRHeatNet1 (Fig. 3a): low-resolution heatmaps upsampled into the next resolution."""
    d1 = deconv(c["C5"], 256, "deconv1")
    d2 = deconv(d1, 256, "deconv2")
    s1 = deconv(projection(d1, k, "branch1_proj"), k, "branch1_deconv")
    s2 = add([projection(d2, k, "branch2_proj"), s1], "branch2_sum")
    main = final(deconv(d2, 256, "deconv3"), k)
    return add([main, transposed(s2, k, "branch2_up")], "heatmap_sum")


def mrheatnet2(c, k):
    """MRHeatNet2 (Fig. 3b): each resolution's heatmaps upsampled to the top independently."""
    d1 = deconv(c["C5"], 256, "deconv1")
    d2 = deconv(d1, 256, "deconv2")
    s1 = transposed(deconv(projection(d1, k, "branch1_proj"), k, "branch1_deconv"), k,
                    "branch1_up")
    s2 = transposed(projection(d2, k, "branch2_proj"), k, "branch2_up")
    main = final(deconv(d2, 256, "deconv3"), k)
    return add([main, s1, s2], "heatmap_sum")


def _feature_average(c, k, c5_channels, c4_channels):
    a = deconv_stack(c["C5"], c5_channels, "c5_deconv")
    b = deconv_stack(c["C4"], c4_channels, "c4_deconv")
    c3 = deconv_stack(c["C3"], [256], "c3_deconv")
    fused = layers.Average(name="feature_average")([c["C2"], c3, b, a])
    return final(fused, k)


def mrfeanet1(c, k):
    """MRFeaNet1 (Fig. 4a): every stage deconvolved to stride 4 with C=256 channels, averaged."""
    return _feature_average(c, k, [256, 256, 256], [256, 256])


def mrfeanet2(c, k):
    """MRFeaNet2 (Fig. 4b): channels halve as resolution doubles (4C, 2C, C), averaged."""
    return _feature_average(c, k, [1024, 512, 256], [512, 256])


ARCHITECTURES = {
    "simple_baseline": simple_baseline,
    "mrheatnet1": mrheatnet1,
    "mrheatnet2": mrheatnet2,
    "mrfeanet1": mrfeanet1,
    "mrfeanet2": mrfeanet2,
}
