# Fails the build when the bundle or the app is broken.
set -e
test -s /usr/local/bundle/INSTALLED
. /app/lib/greeting.sh
greeting | grep -q "hello from the ruby service"
echo "selftest ok"
