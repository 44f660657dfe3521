"""Built-in optimizees; importing this package registers them in ``harness.registry.OPTIMIZEES``.

Registered names: ``quadratic_cos`` (P1), ``mlp`` (ReLU MLP classifiers), ``logreg`` (multinomial logistic
regression: ``mlp`` without hidden layers, convex), ``cnn`` (torchvision CNNs on CIFAR or offline digits32),
``char_lm`` (GRU/LSTM/Transformer language model on generated Markov text), ``autoencoder`` (MLP
autoencoder, reconstruction MSE). Each is registered by ``"module:Class"`` with its kwargs model
(:mod:`optimizees.params`), so listing and validating them imports no torch; the facade's names
(``__init__.pyi``) load on first use.
"""

import lazy_loader

from harness.registry import OPTIMIZEES
from optimizees.params import (
    AutoencoderParams,
    CharLMParams,
    CNNParams,
    LogRegParams,
    MLPParams,
    QuadraticParams,
)

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

OPTIMIZEES.register("quadratic_cos", "optimizees.quadratic:QuadraticCos", params=QuadraticParams)
OPTIMIZEES.register("mlp", "optimizees.mlp:MLPClassifier", params=MLPParams)
OPTIMIZEES.register("cnn", "optimizees.cnn:CNNClassifier", params=CNNParams)
OPTIMIZEES.register("logreg", "optimizees.mlp:LogisticRegression", params=LogRegParams)
OPTIMIZEES.register("char_lm", "optimizees.sequence:CharLM", params=CharLMParams)
OPTIMIZEES.register("autoencoder", "optimizees.autoencoder:Autoencoder", params=AutoencoderParams)
