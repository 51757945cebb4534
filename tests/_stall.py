"""Source shared by the kill-and-resume tests' child scripts: stop after K flushed batches.

``STALL_SOURCE`` defines ``stall_after(k)``, which patches ``Emulator.run_plan`` so that the
process prints READY and sleeps after its k-th batch (the tests then SIGKILL it). The child scripts
are written to temporary folders, so they get this as source text, not as an import.
"""

import textwrap

STALL_SOURCE = textwrap.dedent("""
    import time
    from emu_backend.inference import Emulator

    def stall_after(k):
        orig = Emulator.run_plan
        def stalling(self, *args, **kwargs):
            def gen():
                for i, batch in enumerate(orig(self, *args, **kwargs)):
                    yield batch
                    if i + 1 == k:
                        print("READY", flush=True); time.sleep(600)
            return gen()
        Emulator.run_plan = stalling
""")
