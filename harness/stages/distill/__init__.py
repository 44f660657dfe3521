"""The distill stage: symbolic regression of an SR dataset into a Pareto front, merged and chosen per source.

``fit`` holds the pure work (:func:`distill`, :func:`choose`, :func:`merge_and_choose`), ``table`` the
Table 3 rows of a finished stage, ``kind`` the stage kind, ``report`` its panels in ``sl2o report``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
