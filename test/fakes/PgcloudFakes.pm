
=pod

=head1 NAME

PgcloudFakes - start and drive the pgcloud test fakes from a TAP test

=head1 SYNOPSIS

  use lib "$ENV{PGCLOUD_REPO}/test/fakes";
  use PgcloudFakes;

  my $certs  = PgcloudFakes::make_certs("$tmp/certs");          # optional TLS
  my $stripe = PgcloudFakes->start('stripe', dir => "$tmp/stripe", tls => $certs);
  my $maas   = PgcloudFakes->start('maas', dir => "$tmp/maas",
                                   args => ['--deploy-seconds', '0.5']);
  my $smtp   = PgcloudFakes->start('smtp', dir => "$tmp/smtp");

  $node->append_conf('postgresql.conf', "pgcloud.stripe_api_url = '" . $stripe->url . "'\n"
      . "pgcloud.maas_url = '" . $maas->url . "'\n"                # .../MAAS
      . "pgcloud.smtp_url = '" . $smtp->url . "'\n"
      . "pgcloud.ca_bundle = '$certs->{ca}'\n");

  $stripe->control({ fail_next => 1, status => 500 });          # DIR/control.json
  my @reqs = $stripe->requests;                                 # DIR/requests.jsonl
  my $ev   = $stripe->post_json("/v1/checkout/sessions/$id/_complete");
  my $st   = $maas->state;                                      # GET /_control/state
  $_->stop for $stripe, $maas, $smtp;                           # also on destruction

Core Perl only (JSON::PP, POSIX, Time::HiRes); HTTP goes through the curl CLI so
that TLS fakes work without IO::Socket::SSL.

=cut

package PgcloudFakes;

use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my $HERE = dirname(abs_path(__FILE__));
my %SCRIPT = (stripe => 'fake_stripe.py', maas => 'fake_maas.py', smtp => 'fake_smtp.py', s3 => 'fake_s3.py');
my @LIVE;

sub python
{
    return $ENV{PYTHON} if $ENV{PYTHON};
    return -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
}

# make_certs(DIR) -> { ca, cert, key }: a CA and a server certificate for
# 127.0.0.1/localhost (test/fakes/make_certs.sh).
sub make_certs
{
    my ($dir) = @_;
    system("$HERE/make_certs.sh", $dir) == 0 or die "make_certs.sh $dir failed";
    return { ca => "$dir/ca.crt", cert => "$dir/server.crt", key => "$dir/server.key" };
}

# PgcloudFakes->start(KIND, dir => DIR, tls => CERTS, args => [...], timeout => 10)
sub start
{
    my ($class, $kind, %opt) = @_;
    my $script = $SCRIPT{$kind} or die "unknown fake '$kind' (stripe, maas, smtp, s3)";
    my $dir = $opt{dir} // tempdir("fake_$kind.XXXXXX", TMPDIR => 1, CLEANUP => 1);
    make_path($dir);
    my @cmd = (python(), "$HERE/$script", '--port', '0', '--state-dir', $dir);
    push @cmd, '--tls-cert', $opt{tls}{cert}, '--tls-key', $opt{tls}{key} if $opt{tls};
    push @cmd, @{ $opt{args} // [] };
    unlink "$dir/port";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0)
    {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', "$dir/fake.log");
        open(STDERR, '>&', \*STDOUT);
        exec(@cmd) or POSIX::_exit(127);
    }
    my $self = bless { kind => $kind, dir => $dir, pid => $pid, tls => $opt{tls} }, $class;
    push @LIVE, $self;
    my $deadline = time() + ($opt{timeout} // 10);
    while (time() < $deadline)
    {
        if (open(my $fh, '<', "$dir/port"))
        {
            my $port = <$fh>;
            if (defined $port && $port =~ /^(\d+)$/)
            {
                $self->{port} = $1;
                return $self;
            }
        }
        die "fake $kind exited early:\n" . _slurp("$dir/fake.log")
          if waitpid($pid, WNOHANG) == $pid;
        sleep(0.05);
    }
    $self->stop;
    die "fake $kind did not write $dir/port in time:\n" . _slurp("$dir/fake.log");
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }
sub pid  { $_[0]{pid} }

# Base URL: https?://127.0.0.1:PORT for Stripe, .../MAAS for MAAS (what
# pgcloud.maas_url wants), smtp(s)://127.0.0.1:PORT for SMTP.
sub url
{
    my ($self) = @_;
    my $host = "127.0.0.1:$self->{port}";
    return ($self->{tls} ? 'smtps' : 'smtp') . "://$host" if $self->{kind} eq 'smtp';
    my $base = ($self->{tls} ? 'https' : 'http') . "://$host";
    return $self->{kind} eq 'maas' ? "$base/MAAS" : $base;
}

# Root of the HTTP server (for /_control and fake-only helpers).
sub root_url
{
    my ($self) = @_;
    return ($self->{tls} ? 'https' : 'http') . "://127.0.0.1:$self->{port}";
}

# control(HASHREF): replace DIR/control.json atomically; control(undef) clears it.
sub control
{
    my ($self, $doc) = @_;
    my $tmp = "$self->{dir}/.control.json.tmp";
    open(my $fh, '>', $tmp) or die "$tmp: $!";
    print $fh (defined $doc ? JSON::PP->new->canonical->encode($doc) : '');
    close($fh);
    rename($tmp, "$self->{dir}/control.json") or die "rename: $!";
    return;
}

sub _jsonl
{
    my ($path) = @_;
    my @out;
    open(my $fh, '<', $path) or return ();
    while (my $line = <$fh>)
    {
        next unless $line =~ /\S/;
        push @out, JSON::PP->new->decode($line) if $line =~ /\n\z/;    # skip a line being written
    }
    return @out;
}

# requests(): the request log (list of hashrefs); messages(): SMTP's stored mail.
sub requests { return _jsonl("$_[0]{dir}/requests.jsonl") }
sub messages { return _jsonl("$_[0]{dir}/messages.jsonl") }

# wait_for(CODE, timeout => 5): poll until CODE returns true; returns its value or undef.
sub wait_for
{
    my ($self, $code, %opt) = @_;
    my $deadline = time() + ($opt{timeout} // 5);
    while (1)
    {
        my $v = $code->($self);
        return $v if $v;
        return undef if time() >= $deadline;
        sleep($opt{interval} // 0.05);
    }
}

# curl(METHOD, PATH, @curl_args) -> (status, body): a request to the fake's root.
sub curl
{
    my ($self, $method, $path, @args) = @_;
    my @cmd = ('curl', '-s', '-m', '30', '-X', $method, '-w', '\n%{http_code}');
    push @cmd, '--cacert', $self->{tls}{ca} if $self->{tls};
    push @cmd, @args, $self->root_url . $path;
    open(my $fh, '-|', @cmd) or die "curl: $!";
    local $/;
    my $out = <$fh>;
    close($fh);
    $out //= '';
    my ($body, $code) = $out =~ /\A(.*)\n(\d{3})\z/s ? ($1, $2) : ($out, 0);
    return ($code, $body);
}

# GET /_control/state, and POST to a fake-only helper, decoded.
sub state { my ($c, $b) = $_[0]->curl('GET', '/_control/state'); return JSON::PP->new->decode($b) }

sub post_json
{
    my ($self, $path, @args) = @_;
    my ($code, $body) = $self->curl('POST', $path, @args);
    die "POST $path: HTTP $code: $body" unless $code =~ /^2/;
    return JSON::PP->new->decode($body);
}

sub stop
{
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    my $deadline = time() + 5;
    while (time() < $deadline)
    {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep(0.05);
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return;
}

sub _slurp
{
    my ($path) = @_;
    open(my $fh, '<', $path) or return '';
    local $/;
    return <$fh>;
}

sub DESTROY { my $self = shift; local ($?, $!, $@); $self->stop if $self->{pid} }

END { local $?; $_->stop for grep { $_->{pid} } @LIVE }

1;
