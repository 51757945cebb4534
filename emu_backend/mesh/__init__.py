"""emu_backend.mesh"""
