greeting() { echo "hello from the ruby service ($(cat /usr/local/ruby-version))"; }
