"""Training, export and evaluation of the distilled geometry and layout network.

Needs ``torch`` (requirements/dev.txt) for the model and training; the data generation
(:mod:`sam3d_ros.learning.data`) and the inference backends only need numpy and
onnxruntime.
"""
