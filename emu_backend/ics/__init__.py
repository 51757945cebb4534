"""emu_backend.ics"""
