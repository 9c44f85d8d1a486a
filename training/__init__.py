"""Training of temporally flexible SNNs: time-step schemes (SDT/NMT/MTT), losses, BN
calibration and bias removal, the trainer, evaluation at any temporal configuration, and
accuracy estimation with configuration search. Import the submodules directly
(``from flexsnn.training.trainer import TrainConfig, train``); this package imports nothing
heavy by itself."""
