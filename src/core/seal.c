/*
 * seal.c — the platform master key, key derivation and sealed secrets
 * (see seal.h). OpenSSL does the cryptography.
 */
#include "pgcloud.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "seal.h"

PG_FUNCTION_INFO_V1(pgcloud_seal_seal);
PG_FUNCTION_INFO_V1(pgcloud_seal_unseal);

#define MASTER_KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define SEAL_VERSION 0x01

static unsigned char master_key[MASTER_KEY_LEN];
static bool master_key_loaded = false;

static const char *
key_file_path(void)
{
	if (pgcloud_key_file != NULL && pgcloud_key_file[0] != '\0')
		return pgcloud_key_file;
	return psprintf("%s/pgcloud.key", DataDir);
}

/* Creates the key file with fresh random bytes unless it exists. */
static void
create_key_file(const char *path)
{
	unsigned char key[MASTER_KEY_LEN];
	int			fd;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		if (errno == EEXIST)
			return;				/* another backend won the race */
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not create pgcloud key file \"%s\": %m", path));
	}
	if (!pg_strong_random(key, sizeof(key)))
	{
		close(fd);
		unlink(path);
		elog(ERROR, "could not generate a random master key");
	}
	if (write(fd, key, sizeof(key)) != sizeof(key) || pg_fsync(fd) != 0)
	{
		int			save_errno = errno;

		close(fd);
		unlink(path);
		errno = save_errno;
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not write pgcloud key file \"%s\": %m", path));
	}
	explicit_bzero(key, sizeof(key));
	close(fd);
	ereport(LOG, errmsg("pgcloud created a new master key file \"%s\"", path));
}

static void
load_master_key(void)
{
	const char *path;
	struct stat st;
	unsigned char buf[MASTER_KEY_LEN];
	int			fd;
	ssize_t		n;

	if (master_key_loaded)
		return;
	path = key_file_path();
	if (pgcloud_key_file == NULL || pgcloud_key_file[0] == '\0')
		create_key_file(path);

	fd = open(path, O_RDONLY, 0);
	if (fd < 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not open pgcloud key file \"%s\": %m", path),
				errhint("Set pgcloud.key_file to a file of at least 32 random bytes readable only by the server."));
	if (fstat(fd, &st) != 0 || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		close(fd);
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				errmsg("pgcloud key file \"%s\" must not be accessible by group or others", path),
				errhint("chmod 600 the file."));
	}
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n != MASTER_KEY_LEN)
		ereport(ERROR,
				errcode(ERRCODE_CONFIG_FILE_ERROR),
				errmsg("pgcloud key file \"%s\" must hold at least %d bytes", path, MASTER_KEY_LEN));
	memcpy(master_key, buf, sizeof(master_key));
	explicit_bzero(buf, sizeof(buf));
	master_key_loaded = true;
}

void
PgcloudDeriveKey(const char *context, unsigned char *out, size_t len)
{
	EVP_KDF    *kdf;
	EVP_KDF_CTX *kctx;
	OSSL_PARAM	params[4];
	char	   *info = psprintf("pgcloud/v1/%s", context);
	int			ok;

	load_master_key();
	kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	if (kdf == NULL)
		elog(ERROR, "OpenSSL has no HKDF");
	kctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if (kctx == NULL)
		elog(ERROR, "could not create an HKDF context");
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, master_key, MASTER_KEY_LEN);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, strlen(info));
	params[3] = OSSL_PARAM_construct_end();
	ok = EVP_KDF_derive(kctx, out, len, params);
	EVP_KDF_CTX_free(kctx);
	pfree(info);
	if (ok != 1)
		elog(ERROR, "HKDF derivation failed");
}

bytea *
PgcloudSeal(const unsigned char *plain, size_t len, const char *context)
{
	unsigned char key[32];
	bytea	   *result;
	unsigned char *p;
	EVP_CIPHER_CTX *ctx;
	int			outl;
	int			ok;

	if (len > 64 * 1024 * 1024)
		elog(ERROR, "value too large to seal");
	PgcloudDeriveKey(context, key, sizeof(key));
	result = palloc(VARHDRSZ + PGCLOUD_SEAL_OVERHEAD + len);
	SET_VARSIZE(result, VARHDRSZ + PGCLOUD_SEAL_OVERHEAD + len);
	p = (unsigned char *) VARDATA(result);
	p[0] = SEAL_VERSION;
	if (!pg_strong_random(p + 1, NONCE_LEN))
		elog(ERROR, "could not generate a nonce");

	ctx = EVP_CIPHER_CTX_new();
	ok = ctx != NULL
		&& EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, p + 1) == 1
		&& EVP_EncryptUpdate(ctx, NULL, &outl, (const unsigned char *) context, strlen(context)) == 1
		&& EVP_EncryptUpdate(ctx, p + 1 + NONCE_LEN, &outl, plain, (int) len) == 1
		&& EVP_EncryptFinal_ex(ctx, p + 1 + NONCE_LEN + len, &outl) == 1
		&& EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, p + 1 + NONCE_LEN + len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	explicit_bzero(key, sizeof(key));
	if (!ok)
		elog(ERROR, "sealing failed");
	return result;
}

bytea *
PgcloudUnseal(const bytea *sealed, const char *context)
{
	unsigned char key[32];
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(sealed);
	size_t		total = VARSIZE_ANY_EXHDR(sealed);
	size_t		len;
	bytea	   *result;
	EVP_CIPHER_CTX *ctx;
	int			outl;
	int			ok;

	if (total < PGCLOUD_SEAL_OVERHEAD || p[0] != SEAL_VERSION)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("value is not a pgcloud sealed value"));
	len = total - PGCLOUD_SEAL_OVERHEAD;
	PgcloudDeriveKey(context, key, sizeof(key));
	result = palloc(VARHDRSZ + len + 1);
	SET_VARSIZE(result, VARHDRSZ + len);

	ctx = EVP_CIPHER_CTX_new();
	ok = ctx != NULL
		&& EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, p + 1) == 1
		&& EVP_DecryptUpdate(ctx, NULL, &outl, (const unsigned char *) context, strlen(context)) == 1
		&& EVP_DecryptUpdate(ctx, (unsigned char *) VARDATA(result), &outl, p + 1 + NONCE_LEN, (int) len) == 1
		&& EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
							   (void *) (p + 1 + NONCE_LEN + len)) == 1
		&& EVP_DecryptFinal_ex(ctx, (unsigned char *) VARDATA(result) + outl, &outl) == 1;
	EVP_CIPHER_CTX_free(ctx);
	explicit_bzero(key, sizeof(key));
	if (!ok)
	{
		explicit_bzero(VARDATA(result), len);
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("sealed value cannot be opened"),
				errdetail("It was altered, sealed for another context, or sealed with another master key."));
	}
	return result;
}

/* pgcloud.seal(plain bytea, context text) RETURNS bytea */
Datum
pgcloud_seal_seal(PG_FUNCTION_ARGS)
{
	bytea	   *plain = PG_GETARG_BYTEA_PP(0);
	char	   *context = text_to_cstring(PG_GETARG_TEXT_PP(1));

	PG_RETURN_BYTEA_P(PgcloudSeal((unsigned char *) VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain), context));
}

/* pgcloud.unseal(sealed bytea, context text) RETURNS bytea */
Datum
pgcloud_seal_unseal(PG_FUNCTION_ARGS)
{
	bytea	   *sealed = PG_GETARG_BYTEA_PP(0);
	char	   *context = text_to_cstring(PG_GETARG_TEXT_PP(1));

	PG_RETURN_BYTEA_P(PgcloudUnseal(sealed, context));
}
