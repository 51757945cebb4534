"""emu_backend.checkpoints"""
