"""The collect stage: run a teacher and record (lagged features -> update) rows for symbolic regression.

``dataset`` holds the :class:`SRDataset` format, ``record`` the pure recording, ``kind`` the stage kind.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
