"""emu_backend.inference"""
