"""Test doubles for parts that cannot run here (only samna, the chip SDK). Never used by flexsnn itself."""
