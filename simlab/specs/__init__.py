"""The bottom layer: pydantic models of everything a protocol can say.

``protocol`` (the whole file) is built from ``subjects`` (architectures and tasks),
``rules`` (learning-rule hyperparameters), ``rigs`` (recording instruments) and ``analyses``
(identification and the analyses of a run). Names of extensions are checked against
:mod:`simlab.registry`, never by importing the stages that implement them.
"""
