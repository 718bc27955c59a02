"""PyTorch checkpoints of the paper's code, SimpleBaseline, MMPose and torchvision -> Keras.

Reads (``../shared/reference/torch_layouts.md`` for every fact used here):

- SimMRPose's MRHeatNet1/2 and MRFeaNet1/2 files (``module.``-prefixed state dicts, saved
  from ``DataParallel``) and its training checkpoints (``{'state_dict', 'optimizer',
  'perf', ...}``);
- SimpleBaseline's releases (plain state dicts in PyTorch's legacy format, no
  ``num_batches_tracked``);
- MMPose 0.x (``backbone.*``, ``keypoint_head.*``) and 1.x (``backbone.*``, ``head.*``)
  SimpleBaseline checkpoints;
- torchvision's ImageNet classification ResNets (``fc.*`` dropped), as backbone weights.

Tensors are mapped by name onto the layers of :func:`mrpose_tf.build_model` with a
``pytorch`` or ``caffe`` backbone (the two have the same keys: only the config tells them
apart). Every tensor must be used once and every model variable set, or the conversion
stops with the missing, unexpected and mis-shaped keys. Files are read with
``torch.load(weights_only=True)``, allowing just the numpy scalars of the authors' training
checkpoints; torch is needed here only (``pip install -e '.[torch]'``).
"""
from __future__ import annotations

import os
import re

import numpy as np

# torch layouts -> Keras: Conv2d (out, in, kh, kw) -> (kh, kw, in, out); ConvTranspose2d
# (in, out, kh, kw) -> (kh, kw, out, in): both the axis order (2, 3, 1, 0).
_KERNEL_AXES = (2, 3, 1, 0)
_BATCH_NORM = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
               ("running_var", "moving_variance"))
TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar")
# Where each source's weights expect their input (mrpose_tf.preprocessing).
INPUT_PREPROCESSING = {"simmrpose": "torch_bgr", "mmpose_0x": "torch_rgb",
                       "mmpose_1x": "torch_rgb", "torchvision": "torch_rgb"}

# PyTorch module -> Keras layer, per head (after the source prefixes are stripped).
_HEADS = {
    "simple_baseline": {"deconv_layers.0": "deconv1", "deconv_layers.1": "deconv1_bn",
                        "deconv_layers.3": "deconv2", "deconv_layers.4": "deconv2_bn",
                        "deconv_layers.6": "deconv3", "deconv_layers.7": "deconv3_bn"},
    "mrheatnet1": {"s_conv1.0": "branch1_proj", "s_conv1.1": "branch1_proj_bn",
                   "s_deconv1.0": "branch1_deconv", "s_deconv1.1": "branch1_deconv_bn",
                   "s_conv2.0": "branch2_proj", "s_conv2.1": "branch2_proj_bn",
                   "s_deconv2": "branch2_up"},
    "mrheatnet2": {"s_conv1.0": "branch1_proj", "s_conv1.1": "branch1_proj_bn",
                   "s_deconv1.0": "branch1_deconv", "s_deconv1.1": "branch1_deconv_bn",
                   "s_deconv12": "branch1_up", "s_conv2.0": "branch2_proj",
                   "s_conv2.1": "branch2_proj_bn", "s_deconv2": "branch2_up"},
}
for _arch in ("mrheatnet1", "mrheatnet2"):
    for _n in (1, 2, 3):
        _HEADS[_arch].update({f"deconv{_n}.0": f"deconv{_n}", f"deconv{_n}.1": f"deconv{_n}_bn"})
for _arch in ("mrfeanet1", "mrfeanet2"):
    _HEADS[_arch] = {}
    for _torch, _keras in (("deconv11", "c5_deconv1"), ("deconv12", "c5_deconv2"),
                           ("deconv13", "c5_deconv3"), ("deconv21", "c4_deconv1"),
                           ("deconv22", "c4_deconv2"), ("deconv3", "c3_deconv1")):
        _HEADS[_arch].update({f"{_torch}.0": _keras, f"{_torch}.1": f"{_keras}_bn"})
for _modules in _HEADS.values():
    _modules["final_layer"] = "final"

_KERAS_BACKBONE = re.compile(r"^conv(\d)_block(\d+)_(\d)_(conv|bn)$")


class ConversionError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the keys."""


def is_torch_file(path):
    """Whether ``path`` names a PyTorch checkpoint (by its suffix)."""
    return str(path).lower().endswith(TORCH_SUFFIXES)


def _torch_backbone_module(layer_name):
    """The torchvision ResNet module of a backbone layer name, or None (not the backbone)."""
    if layer_name in ("conv1_conv", "conv1_bn"):
        return "conv1" if layer_name == "conv1_conv" else "bn1"
    match = _KERAS_BACKBONE.match(layer_name)
    if not match:
        return None
    stage, block, index, kind = match.groups()
    if index == "0":  # the shortcut's projection
        return f"layer{int(stage) - 1}.0.downsample.{0 if kind == 'conv' else 1}"
    return f"layer{int(stage) - 1}.{int(block) - 1}.{kind}{index}"


def read_torch_checkpoint(path):
    """The state dict of a PyTorch checkpoint file, as numpy arrays.

    Accepts a plain state dict or a dict holding one under 'state_dict' (the authors'
    training checkpoints, MMPose's files), in PyTorch's zip or legacy format. Loaded with
    ``weights_only=True``; only numpy scalars and dtypes are allowed beyond that.

    Returns:
      {key: np.ndarray}, in the file's order.

    Raises:
      FileNotFoundError: no such file.
      ConversionError: not a PyTorch checkpoint (or truncated), or no state dict in it.
    """
    try:
        import torch
    except ImportError:
        raise ImportError("reading PyTorch checkpoints needs torch: pip install -e '.[torch]'"
                          ) from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [getattr(np.dtypes, name) for name in ("Float64DType", "Float32DType",
                                                      "Int64DType", "Int32DType")
                if hasattr(np, "dtypes")]
    try:
        with torch.serialization.safe_globals(allowed):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file it cannot read
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint: "
                              f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                              ) from None
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(content)[:10] if isinstance(content, dict) else type(content).__name__
        raise ConversionError(f"{path} holds no state dict of tensors (found {found})")
    return {key: value.detach().cpu().numpy() for key, value in state.items()}


def detect_source(state, path="checkpoint"):
    """(source, state with the source's prefixes removed) of a state dict.

    Sources: 'mmpose_1x' (``backbone.``, ``head.``), 'mmpose_0x' (``backbone.``,
    ``keypoint_head.``), 'torchvision' (a classification ResNet: ``fc.*``, no head) and
    'simmrpose' (SimMRPose and SimpleBaseline, with or without DataParallel's ``module.``).
    """
    keys = list(state)
    if any(k.startswith("backbone.") for k in keys):
        head = "head." if any(k.startswith("head.") for k in keys) else "keypoint_head."
        source = "mmpose_1x" if head == "head." else "mmpose_0x"
        stripped = {}
        for key, value in state.items():
            for prefix in ("backbone.", head):
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    break
            stripped[key] = value
        return source, stripped
    if all(k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("fc.") for k in state) and not any(
            k.startswith(("deconv", "final_layer", "s_conv")) for k in state):
        return "torchvision", state
    return "simmrpose", state


def _layer_weights(layer, module, state, used, problems):
    """The Keras weights of ``layer`` from the tensors of torch ``module``, or None."""
    shapes = []

    def take(name, transform=None):
        key = f"{module}.{name}"
        if key not in state:
            problems["missing"].append(key)
            return None
        used.add(key)
        value = state[key]
        shapes.append(f"{key} {tuple(value.shape)}")
        return value.transpose(_KERNEL_AXES) if transform else value

    if hasattr(layer, "moving_variance"):
        values = [take(torch_name) for torch_name, _ in _BATCH_NORM]
        used.add(f"{module}.num_batches_tracked")
    else:
        values = [take("weight", transform=True)]
        if getattr(layer, "use_bias", False):
            values.append(take("bias"))
    if any(v is None for v in values):
        return None
    expected = [tuple(w.shape) for w in layer.weights]
    if [tuple(v.shape) for v in values] != expected:
        problems["shape"].append(f"{', '.join(shapes)} for layer {layer.name} of Keras shapes "
                                 f"{', '.join(map(str, expected))}")
        return None
    return values


def assign_state(model, state, arch, path="checkpoint", backbone_only=False):
    """Set the weights of ``model`` from a stripped state dict (:func:`detect_source`).

    Args:
      model: a pytorch- or caffe-style model of :func:`mrpose_tf.build_model`.
      state: {torch key: array} without source prefixes.
      arch: the model's architecture (which head names to expect).
      path: the file, for messages.
      backbone_only: set only the ResNet (a classification checkpoint: its ``fc.*`` is
        dropped; the head keeps its initial weights).

    Raises:
      ConversionError: listing missing, unexpected and mis-shaped keys; nothing is set then.
    """
    heads = {} if backbone_only else {v: k for k, v in _HEADS[arch].items()}
    problems = {"missing": [], "unexpected": [], "shape": []}
    used = set()
    assignments = []
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _torch_backbone_module(layer.name) or heads.get(layer.name)
        if module is None:
            if not backbone_only:
                problems["missing"].append(f"(no PyTorch module for layer {layer.name})")
            continue
        values = _layer_weights(layer, module, state, used, problems)
        if values is not None:
            assignments.append((layer, values))
    ignored = {k for k in state if backbone_only and k.startswith("fc.")}
    problems["unexpected"] = sorted(set(state) - used - ignored
                                    - {k for k in state if k.endswith("num_batches_tracked")})
    if any(problems.values()):
        lines = [f"{len(v)} {kind}: {', '.join(map(str, v[:8]))}{' ...' if len(v) > 8 else ''}"
                 for kind, v in problems.items() if v]
        what = (f"the backbone of {model.name}" if backbone_only else
                f"the {model.name} model ({arch}, {model.output.shape[-1]} keypoints)")
        raise ConversionError(f"{path} does not fit {what}: " + "; ".join(lines))
    for layer, values in assignments:
        layer.set_weights([np.asarray(v, dtype=w.dtype) for v, w in zip(values, layer.weights)])


def load_torch_backbone(model, path):
    """Load a torchvision classification ResNet (``resnet50-19c8e357.pth`` and the 101/152
    files) into the backbone of a pytorch-style ``model``; ``fc.*`` is dropped.

    Raises:
      ConversionError: the file's backbone does not fit (another depth, not a ResNet).
    """
    source, state = detect_source(read_torch_checkpoint(path), path)
    assign_state(model, state, arch=None, path=path, backbone_only=True)
    return source


def convert_checkpoint(checkpoint, config, workdir, style=None, log=print):
    """Write ``workdir`` as a run directory holding a converted PyTorch checkpoint.

    The run directory (``config.json``, ``keypoints.json``, ``checkpoints/ckpt-0``,
    ``conversion.json``) is what :meth:`mrpose_tf.Predictor.from_checkpoint`,
    ``scripts/evaluate.py``, ``scripts/export.py`` and ``scripts/demo.py`` take. It is
    written into a temporary folder and renamed at the end: nothing appears at ``workdir``
    unless the conversion succeeded.

    Args:
      checkpoint: the PyTorch file (any layout of the module docstring).
      config: the experiment ConfigDict of the network (arch, backbone, num_joints,
        input_size, dataset for the keypoint set).
      workdir: the run directory to create (must not exist, or be empty).
      style: 'pytorch' or 'caffe' (the file cannot tell); default: the config's
        ``model.backbone_style`` when it is one of them, else 'pytorch' (the authors' and
        MMPose's default).
      log: a function taking a line of text.

    Returns:
      The converted ``keras.Model``. ``config.model.input_preprocessing`` is set from the
      source (SimMRPose and SimpleBaseline: 'torch_bgr'; MMPose: 'torch_rgb').

    Raises:
      FileExistsError: ``workdir`` holds files. ConversionError: the file is not a
      checkpoint of this network (its message lists the keys).
    """
    import tensorflow as tf

    from mrpose_tf.checkpoints import keypoint_set_from_config
    from mrpose_tf.config import model_from_config
    from mrpose_tf.files import atomic_write_json
    from mrpose_tf.keypoints import save_keypoint_set

    workdir = os.path.abspath(workdir)
    if os.path.isdir(workdir) and os.listdir(workdir):
        raise FileExistsError(f"{workdir} is not empty; give a new run directory")
    style = style or (config.model.get("backbone_style") if config.model.get(
        "backbone_style") in ("pytorch", "caffe") else "pytorch")
    if style not in ("pytorch", "caffe"):
        raise ValueError(f"style must be 'pytorch' or 'caffe' (PyTorch ResNets), got {style!r}")
    source, state = detect_source(read_torch_checkpoint(checkpoint), checkpoint)
    if source == "torchvision":
        raise ConversionError(f"{checkpoint} is an ImageNet classification ResNet (fc.*, no "
                              f"pose head): train from it with "
                              f"--config.model.backbone_weights={checkpoint}")
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.backbone_style = style
        config.model.input_preprocessing = INPUT_PREPROCESSING[source]
        config.model.backbone_weights = None
    model = model_from_config(config)
    assign_state(model, state, config.model.arch, checkpoint)
    keypoints = keypoint_set_from_config(config)
    staging = f"{workdir}.converting-{os.getpid()}"
    os.makedirs(staging)
    try:
        atomic_write_json(os.path.join(staging, "config.json"), config.to_dict())
        save_keypoint_set(keypoints, staging)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                   os.path.join(staging, "checkpoints"), max_to_keep=1).save(
            checkpoint_number=0)
        atomic_write_json(os.path.join(staging, "conversion.json"), {
            "checkpoint": os.path.abspath(checkpoint), "source": source, "style": style,
            "input_preprocessing": config.model.input_preprocessing,
            "arch": config.model.arch, "backbone": config.model.backbone})
        if os.path.isdir(workdir):
            os.rmdir(workdir)  # empty
        os.replace(staging, workdir)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"converted {checkpoint} ({source}, {style}-style {config.model.backbone}, input "
        f"{config.model.input_preprocessing}) into {workdir}")
    return model
