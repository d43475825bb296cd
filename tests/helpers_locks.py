"""A process that holds an m3net lock file, for the one-writer tests."""
import subprocess
import sys


def hold_lock(lock_path):
    """A second process holding m3net's write lock on ``lock_path`` until killed."""
    code = ("import sys, time\nfrom m3net.locking import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1], 'x'):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, lock_path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc
