"""emu_backend.nn"""
