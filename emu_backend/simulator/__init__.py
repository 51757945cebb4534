"""emu_backend.simulator"""
