/*
 * releases.h — the releases service's C (SSH keys and access certificates).
 *
 * The pure parser and certificate builder live in sshkey.c / sshcert.c
 * (sshkey.h, no PostgreSQL headers); keys.c and ca.c are their SQL-callable
 * faces.
 */
#ifndef PGCLOUD_RELEASES_H
#define PGCLOUD_RELEASES_H

#include "sshkey.h"

/* The sealing context of the CA private key. */
#define RELEASES_CA_SEAL_CONTEXT "releases.ssh_ca"

/*
 * Parses an authorized_keys line into a palloc'd SshKey; raises the
 * catalogued error (ssh_key_invalid, ssh_key_type_unsupported,
 * ssh_key_too_weak, ssh_key_options_unsupported) when it is not accepted.
 */
extern SshKey *ReleasesParseKeyOrRaise(text *line);

#endif							/* PGCLOUD_RELEASES_H */
