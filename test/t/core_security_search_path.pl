# Security tier, search_path (issue 10, the CVE-2018-1058 class): code that
# runs as a superuser (the scheduler, relay and HTTP executor workers)
# must not resolve a name to something a user created. A user with CREATE
# on schema public plants an operator / (integer, numeric) that a superuser
# caller with the default search_path would pick over pg_catalog's.
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = pgcloud_node('search_path');
$node->safe_psql('postgres', q{
    CREATE ROLE evil LOGIN;
    GRANT CREATE, USAGE ON SCHEMA public TO evil;
    SET ROLE evil;
    CREATE TABLE public.pwned (who text, at timestamptz DEFAULT now());
    GRANT INSERT ON public.pwned TO PUBLIC;
    CREATE FUNCTION public.evil_div(integer, numeric) RETURNS numeric LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO public.pwned (who) VALUES (current_user);
        RETURN $1::numeric OPERATOR(pg_catalog./) $2;
    END $$;
    CREATE OPERATOR public./ (LEFTARG = integer, RIGHTARG = numeric, FUNCTION = public.evil_div);
    RESET ROLE;
});
is($node->safe_psql('postgres', 'SELECT 4 / 2.0 > 0; SELECT count(*) FROM public.pwned'), "t\n1",
    'the planted operator does capture an unqualified integer / numeric (the attack is real)');
$node->safe_psql('postgres', 'TRUNCATE public.pwned');

# The scheduler runs the jobs (the MAAS poller every maas.poller_interval_ms)
# and the relay and HTTP executor run: all as the bootstrap superuser, with
# their search_path pinned to pg_catalog.
sleep(3);
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.pwned'), '0',
    "the scheduler's jobs ran none of the user's code as superuser");
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' JOIN pg_extension e ON e.oid = d.refobjid
   WHERE e.extname LIKE 'pgcloud%' AND p.prosecdef
     AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')}), '0',
    'every SECURITY DEFINER function of pgcloud pins its search_path');
# Workers pin theirs too: they keep running, and the planted operator is never called.
$node->safe_psql('postgres', q{SELECT pgcloud.emit('load.tick', 'thing', 'x', '{"seq": 1}')});
sleep(2);
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.pwned'), '0', 'the workers did not call it either');
$node->stop('fast');
done_testing();
