"""Training, export and evaluation of the distilled geometry and layout network.

The network itself is :mod:`sam3d_ros.backends.torch_model` (the torch backend runs it); the
``sam3d-ros train`` and ``gate`` commands are :mod:`sam3d_ros.tools.train` and
:mod:`sam3d_ros.tools.gate`. Needs ``torch`` (requirements/dev.txt) for training and export;
the data generation (:mod:`sam3d_ros.learning.data`) and the inference backends only need
numpy and onnxruntime.
"""
