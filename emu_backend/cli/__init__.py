"""emu_backend.cli"""
