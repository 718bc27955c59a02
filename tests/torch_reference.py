"""Seeded PyTorch references for the conversion tests (the networks: torch_peer.PoseNet)."""
import numpy as np
import torch
from torch import nn

from mrpose_tf.benchmarks.torch_peer import PoseNet


def seeded_pose_net(arch, depth=50, style="pytorch", num_joints=17, seed=0):
    """A :class:`PoseNet` in eval mode with seeded weights: non-trivial BatchNorm statistics
    and affine parameters everywhere, and convolution scales that keep the activations of a
    deep ResNet in range and give heatmaps far from zero."""
    torch.manual_seed(seed)
    net = PoseNet(arch, depth, style, num_joints)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.from_numpy(rng.uniform(0.6, 1.4, c)))
                module.bias.copy_(torch.from_numpy(rng.normal(0, 0.2, c)))
                module.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.2, c)))
                module.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, c)))
                module.num_batches_tracked.fill_(int(rng.integers(1, 1000)))
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = module.weight[0].numel() if isinstance(module, nn.Conv2d) else (
                    module.weight.shape[0] * 4)  # a stride-2 k4 deconv sums 4 taps per output
                module.weight.normal_(0, float(np.sqrt(1.0 / fan_in)))
                if module.bias is not None:
                    module.bias.normal_(0, 0.1)
    return net.eval()


def crops_tensor(crops_bgr_uint8, convention="torch_bgr"):
    """The authors' input: ToTensor() + Normalize(ImageNet mean, std) of the crops as stored
    (BGR for SimMRPose/SimpleBaseline; torch_rgb reverses to RGB first). NCHW float32."""
    x = np.asarray(crops_bgr_uint8, np.float32) / 255.0
    if convention == "torch_rgb":
        x = x[..., ::-1]
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225],
                                                                      np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
