"""The one-step restorer (SD-Turbo + LoRA, or the small embedded CPU model) and its helpers.

Submodules: :mod:`.model` (``OneStepRestorer``), :mod:`.codecs`, :mod:`.lora`, :mod:`.adapter`,
:mod:`.sd_turbo`, :mod:`.tiling`, :mod:`.colorfix`. Import them directly; this package imports nothing
heavy by itself.
"""
