"""mrpose_tf: Simple Multi-Resolution Representation Learning for Human Pose Estimation, in TensorFlow/Keras 3."""
from setuptools import find_packages, setup

setup(
    name="mrpose_tf",
    version="0.1.0",
    description=(
        "TensorFlow/Keras reimplementation of 'Simple Multi-Resolution Representation "
        "Learning for Human Pose Estimation' (MRHeatNet/MRFeaNet on SimpleBaseline)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mrpose_tf", "mrpose_tf.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # needed by tensorflow-datasets builders, not always pulled in
        "numpy",
        "opencv-python-headless>=4.8,<5",  # 5.x dropped the HOG person detector (demo)
        "pycocotools",
        "absl-py",
        "ml-collections",
        "scipy",
        "tensorboard",
        "ai-edge-litert",  # the LiteRT interpreter for the exported TFLite models
        "matplotlib",  # learning curves and benchmark figures
    ],
    extras_require={
        # Reading PyTorch checkpoints (scripts/convert_weights.py, torchvision backbones).
        "torch": ["torch>=2.1"],
        # The OpenVINO export (--formats=openvino) and export/openvino_infer.py.
        "openvino": ["openvino>=2024.0"],
        # torch: PyTorch references of the tests (BatchNorm, Adam), pinned to the CPU build
        # these machines carry (a newer release pulls a multi-GB CUDA build). pytest < 9:
        # pytest-xdist's xdist_group marks (pytest.ini) do not take effect under pytest 9.
        # openvino: the OpenVINO export's parity tests (a ~60 MB wheel, numpy its only
        # sizeable dependency).
        "test": ["pytest>=8,<9", "pytest-timeout", "pytest-xdist>=3.5", "torch==2.13.0",
                 "openvino>=2024.0"],
    },
    entry_points={
        "console_scripts": [
            "mrpose-train=mrpose_tf.cli.train:run",
            "mrpose-evaluate=mrpose_tf.cli.evaluate:run",
            "mrpose-export=mrpose_tf.cli.export:run",
            "mrpose-demo=mrpose_tf.cli.demo:run",
            "mrpose-convert=mrpose_tf.cli.convert:run",
            "mrpose-benchmark=mrpose_tf.benchmarks:main",
        ],
    },
    license="Apache-2.0",
)
