// Package packaging holds what builds the fleetprov .deb: the nfpm
// configuration, the maintainer scripts, the systemd units and the man
// page and completion generator (gendoc). Its test builds the package,
// installs it with dpkg and provisions a device with the installed binary.
// See docs/packaging.md.
package packaging
