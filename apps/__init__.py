"""End-to-end applications built on every layer of flexsnn.

- :mod:`flexsnn.apps.demo`: ``run_demo(config)``, the README's main job (SDT vs MTT on
  saccade-mnist, exported to Speck2e chip images, time-binned vs asynchronous).
- :mod:`flexsnn.apps.report`: the demo's report folder (markdown, HTML, PNGs).
- :mod:`flexsnn.apps.reproduce`: the MTT paper's Speck2e table at full scale on real N-MNIST.
"""
