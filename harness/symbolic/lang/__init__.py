"""The equation language over lagged features: safe parser, canonical text, numpy and torch evaluation.

This facade only re-exports. Grammar of the text form (details and caps: ``docs/symbolic.md``):

* variables ``feature_lag`` (lag 0 = newest); float literals are trainable constants, one per occurrence;
  integer literals are fixed structural numbers;
* ``+ - * / **``, unary ``- +``; functions ``sqrt pow`` (SIGN-EXTENDED: ``sqrt(x) = sign(x)*sqrt(|x|)``),
  ``square cube exp log tanh asinh sinh cos sin abs sign erfc relu``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
