"""A POSIX shell function reading /proc/PID/stat with builtins only (the root shell's watchdog runs
it every second, the deploy lock a few times): no process started per read."""

# `field PID N`: field N of /proc/PID/stat after "pid (comm) " (1: state, 2: ppid, 3: process group,
# 20: start time) in $v; status 1 (and v empty) when the process is gone.
FIELD = ('field() { s=; { read -r s < "/proc/$1/stat"; } 2>/dev/null; n=$2; set -- ${s##*) }; v=; '
         '[ $# -ge "$n" ] || return 1; shift $((n - 1)); v=$1; }')
