"""Simulation: synthetic residents and changes (`synth`), the whole network in one process
(`network`, `demo`), and the end-to-end benchmark (`bench`).
"""
