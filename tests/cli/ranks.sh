# Sourced by the CLI tests that signal one rank of a local mpiexec job.
# rank_pid LAUNCHER RANK: the pid of mpiexec LAUNCHER's child whose
# environment says OMPI_COMM_WORLD_RANK=RANK (empty if none).
rank_pid() {
  local p
  for p in $(ps -o pid= --ppid "$1"); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"
      return
    fi
  done
}
