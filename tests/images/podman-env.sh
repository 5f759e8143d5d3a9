# Sourced: points podman at a config and storage of the project's own under
# $LAKELOAD_PODMAN_DIR (default $HOME/.cache/lakeload/podman), with the settings this kind of
# machine needs (../shared/TESTING.md): runc (crun fails on its cgroup layout), ulimits it can
# apply, overlay storage. Images built there stay cached between test runs.
podman_dir="${LAKELOAD_PODMAN_DIR:-$HOME/.cache/lakeload/podman}"
mkdir -p "$podman_dir"/{storage,run,tmp,volumes}
hard_nofile="$(ulimit -Hn)"
cat > "$podman_dir/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$podman_dir/storage"
runroot = "$podman_dir/run"
CONF
cat > "$podman_dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$hard_nofile:$hard_nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
# No systemd here (PID 1 is not an init system).
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$podman_dir/tmp"
# No static_dir: podman's container database then lives under graphroot, where the cleanup
# process conmon starts at each container's exit (given only --root) finds it; otherwise every
# `podman run` waits 20 s for an exit code nobody records ("Exceeded conmon timeout").
volume_path = "$podman_dir/volumes"
CONF
export CONTAINERS_STORAGE_CONF="$podman_dir/storage.conf"
export CONTAINERS_CONF="$podman_dir/containers.conf"
