"""The paper's networks in plain PyTorch: the benchmarks' peer and the tests' reference.

``PoseNet(arch, depth, style, num_joints)`` has the module names (and so the state-dict keys)
of SimMRPose's ``lib/models/*.py`` (``../shared/reference/torch_layouts.md``): ``conv1``,
``bn1``, ``layer1..4`` (torchvision's ResNet trunk, ``Bottleneck`` or ``Bottleneck_CAFFE``),
then each head's modules. Needs torch (an optional dependency).
"""
from torch import nn

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class Bottleneck(nn.Module):
    """torchvision's bottleneck (stride in the 3x3 conv); ``caffe``: stride in the first 1x1."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, caffe=False):
        super().__init__()
        first, middle = (stride, 1) if caffe else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=first, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=0.1)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=middle, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=0.1)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes, momentum=0.1)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


def _deconv(cin, cout):
    """D(c): ConvTranspose2d(k4, s2, p1, no bias) + BatchNorm2d + ReLU."""
    return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, output_padding=0, bias=False),
            nn.BatchNorm2d(cout, momentum=0.1), nn.ReLU()]


def _projection(cin, cout):
    """P(k): Conv2d 1x1 (bias) + BatchNorm2d + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout, momentum=0.1), nn.ReLU())


def _bare_deconv(c):
    return nn.ConvTranspose2d(c, c, 4, stride=2, padding=1, output_padding=0, bias=False)


class PoseNet(nn.Module):
    """One of the five networks (``arch`` as in mrpose_tf), ResNet-``depth``, NCHW in/out."""

    def __init__(self, arch, depth=50, style="pytorch", num_joints=17):
        super().__init__()
        self.arch = arch
        caffe = style == "caffe"
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=0.1)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for index, (blocks, planes) in enumerate(zip(BLOCKS[depth], (64, 128, 256, 512)), 1):
            stride = 1 if index == 1 else 2
            downsample = nn.Sequential(nn.Conv2d(inplanes, 4 * planes, 1, stride=stride,
                                                 bias=False),
                                       nn.BatchNorm2d(4 * planes, momentum=0.1))
            layers = [Bottleneck(inplanes, planes, stride, downsample, caffe)]
            inplanes = 4 * planes
            layers += [Bottleneck(inplanes, planes, caffe=caffe) for _ in range(1, blocks)]
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        k = num_joints
        if arch == "simple_baseline":
            self.deconv_layers = nn.Sequential(*_deconv(2048, 256), *_deconv(256, 256),
                                               *_deconv(256, 256))
        elif arch in ("mrheatnet1", "mrheatnet2"):
            self.deconv1 = nn.Sequential(*_deconv(2048, 256))
            self.deconv2 = nn.Sequential(*_deconv(256, 256))
            self.deconv3 = nn.Sequential(*_deconv(256, 256))
            self.s_conv1 = _projection(256, k)
            self.s_deconv1 = nn.Sequential(*_deconv(k, k))
            if arch == "mrheatnet2":
                self.s_deconv12 = _bare_deconv(k)
            self.s_conv2 = _projection(256, k)
            self.s_deconv2 = _bare_deconv(k)
        else:
            wide = arch == "mrfeanet2"
            self.deconv11 = nn.Sequential(*_deconv(2048, 1024 if wide else 256))
            self.deconv12 = nn.Sequential(*_deconv(1024 if wide else 256, 512 if wide else 256))
            self.deconv21 = nn.Sequential(*_deconv(1024, 512 if wide else 256))
            self.deconv13 = nn.Sequential(*_deconv(512 if wide else 256, 256))
            self.deconv22 = nn.Sequential(*_deconv(512 if wide else 256, 256))
            self.deconv3 = nn.Sequential(*_deconv(512, 256))
        self.final_layer = nn.Conv2d(256, k, 1)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        if self.arch == "simple_baseline":
            return self.final_layer(self.deconv_layers(c5))
        if self.arch in ("mrheatnet1", "mrheatnet2"):
            d1 = self.deconv1(c5)
            d2 = self.deconv2(d1)
            main = self.final_layer(self.deconv3(d2))
            if self.arch == "mrheatnet1":
                s = self.s_conv2(d2) + self.s_deconv1(self.s_conv1(d1))
                return main + self.s_deconv2(s)
            return (main + self.s_deconv12(self.s_deconv1(self.s_conv1(d1)))
                    + self.s_deconv2(self.s_conv2(d2)))
        fused = (c2 + self.deconv3(c3) + self.deconv22(self.deconv21(c4))
                 + self.deconv13(self.deconv12(self.deconv11(c5)))) / 4
        return self.final_layer(fused)
