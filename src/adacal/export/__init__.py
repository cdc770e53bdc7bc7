"""Hardware interchange: export converted SNNs to NIR and import NIR graphs back (extra ``adacal[nir]``).

``export_nir`` writes exactly what adacal simulates or refuses, naming every node it cannot
represent; ``import_nir`` reads a NIR graph of IF/I/Threshold/Affine/Conv nodes into a
:class:`~adacal.spiking_model.SpikingModel`. See :mod:`adacal.export.nir` for the representation.
"""
from __future__ import annotations

from adacal.export.nir import NIRExportError, NIRIssue, export_nir, export_run_folder
from adacal.export.nir_import import NIRImportError, import_nir

__all__ = ["NIRExportError", "NIRImportError", "NIRIssue", "export_nir", "export_run_folder", "import_nir"]
